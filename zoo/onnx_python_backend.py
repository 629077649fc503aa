"""Triton Python-backend model that serves one ONNX file with onnxruntime.

This file is copied verbatim to ``<model>/1/model.py`` in the embedded repository variant (Triton from the
nvidia-pytriton wheel has no native ONNX Runtime backend). It runs the CUDA execution provider when Triton
places the instance on a GPU and onnxruntime-gpu is installed, the CPU provider otherwise.
Parameters come from config.pbtxt: ``onnx_file`` and ``intra_op_threads``.
"""

import json
import os

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        path = os.path.join(args["model_repository"], args["model_version"], params.get("onnx_file", "model.onnx"))
        if not os.path.isfile(path):
            raise pb_utils.TritonModelException(f"ONNX file {path} does not exist")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(params.get("intra_op_threads", "1"))
        providers = ["CPUExecutionProvider"]
        if args.get("model_instance_kind") == "GPU" and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, ("CUDAExecutionProvider", {"device_id": int(args["model_instance_device_id"])}))
        try:
            self.session = ort.InferenceSession(path, opts, providers=providers)
        except Exception as e:  # onnxruntime raises its own types; Triton shows this message as the load reason
            raise pb_utils.TritonModelException(f"cannot load ONNX file {path}: {str(e).splitlines()[0]}")
        self.input_name = config["input"][0]["name"]
        self.output_name = config["output"][0]["name"]

    def execute(self, requests):
        # Dynamic batching hands us several requests: run them as one batch, then split the answer back.
        arrays = [pb_utils.get_input_tensor_by_name(r, self.input_name).as_numpy() for r in requests]
        try:
            probs = self.session.run([self.output_name], {self.input_name: np.concatenate(arrays)})[0]
        except Exception as e:
            err = pb_utils.TritonError(f"onnxruntime failed: {str(e).splitlines()[0]}")
            return [pb_utils.InferenceResponse(error=err) for _ in requests]
        bounds = np.cumsum([len(a) for a in arrays])[:-1]
        return [
            pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(self.output_name, chunk)])
            for chunk in np.split(probs, bounds)
        ]
