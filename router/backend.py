"""The inference backends the router forwards to. All satisfy one tiny interface: ``infer(model, x) -> probs``.

- ``TritonHttpBackend`` (router/triton_http.py, the default): Triton's HTTP endpoint with binary tensors on
  keep-alive connections, a fifth of the CPU per call of the gRPC client;
- ``TritonGrpcBackend``: tritonclient's asyncio gRPC client (one pooled HTTP/2 channel, binary tensors, a
  per-request deadline, fast reconnects so the router recovers by itself when Triton comes back), for
  deployments that only expose Triton's gRPC port (``triton_protocol: "grpc"``);
- ``NullBackend``: answers uniform probabilities at once; measures the router's own overhead and serves the
  router's unit tests (never the only test of a path users run against Triton).
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from .errors import BackendTimeout, BackendUnavailable


class InferenceBackend(Protocol):
    async def infer(self, model: str, x: np.ndarray) -> np.ndarray: ...

    async def ready(self) -> bool: ...

    async def close(self) -> None: ...


class TritonGrpcBackend:
    # gRPC's default reconnect backoff grows to 120 s; cap it so a restarted Triton is found within ~1 s.
    CHANNEL_ARGS = [
        ("grpc.initial_reconnect_backoff_ms", 100),
        ("grpc.min_reconnect_backoff_ms", 100),
        ("grpc.max_reconnect_backoff_ms", 1000),
        ("grpc.max_receive_message_length", 64 * 1024 * 1024),
        ("grpc.max_send_message_length", 64 * 1024 * 1024),
    ]

    def __init__(self, url: str, timeout_ms: float, tensor_names: dict[str, tuple[str, str]]):
        import tritonclient.grpc.aio as grpcclient

        self._mod = grpcclient
        self.client = grpcclient.InferenceServerClient(url, channel_args=self.CHANNEL_ARGS)
        self.timeout_s = timeout_ms / 1e3
        self._names = tensor_names
        self._outputs = {m: [grpcclient.InferRequestedOutput(out)] for m, (_, out) in tensor_names.items()}

    async def infer(self, model: str, x: np.ndarray) -> np.ndarray:
        from tritonclient.utils import InferenceServerException

        inp = self._mod.InferInput(self._names[model][0], list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        try:
            result = await self.client.infer(model, [inp], outputs=self._outputs[model], client_timeout=self.timeout_s)
        except InferenceServerException as e:
            status = str(e.status() or "")
            if "DEADLINE_EXCEEDED" in status or "Deadline" in str(e):
                raise BackendTimeout(f"Triton did not answer within {self.timeout_s * 1e3:.0f} ms") from e
            raise BackendUnavailable(f"Triton: {e.message() or status}") from e
        return result.as_numpy(self._names[model][1])

    async def ready(self) -> bool:
        try:
            return bool(await self.client.is_server_ready(client_timeout=1.0))
        except Exception:  # any transport failure means "not ready"; the caller only needs the boolean
            return False

    async def close(self) -> None:
        await self.client.close()


class NullBackend:
    def __init__(self, n_classes: int):
        self.n_classes = n_classes

    async def infer(self, model: str, x: np.ndarray) -> np.ndarray:
        return np.full((len(x), self.n_classes), 1.0 / self.n_classes, dtype=np.float32)

    async def ready(self) -> bool:
        return True

    async def close(self) -> None:
        return None


def make_backend(settings, zoo) -> InferenceBackend:
    """The backend a router's settings name (``backend`` and ``triton_protocol``)."""
    if settings.backend == "null":
        return NullBackend(zoo.n_classes)
    if settings.triton_protocol == "grpc":
        return TritonGrpcBackend(settings.triton_grpc_url, settings.request_timeout_ms, zoo.tensor_names)
    from .triton_http import TritonHttpBackend

    return TritonHttpBackend(settings.triton_http_url, settings.request_timeout_ms, zoo.tensor_names)
