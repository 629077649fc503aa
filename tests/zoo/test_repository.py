import pytest

from common.errors import ConfigError
from zoo.repository import ModelIO, RepositorySettings, config_pbtxt


def test_both_variants_share_signature_and_batching():
    s = RepositorySettings(max_batch_size=64, instance_count=3, max_queue_delay_us=50)
    emb, gpu = (config_pbtxt("m", ModelIO((40,), 10), v, s) for v in ("embedded", "gpu"))
    shared = [l for l in emb.splitlines() if l.startswith(("input", "output", "max_batch", "dynamic_batching"))]
    assert len(shared) == 4 and all(l in gpu.splitlines() for l in shared)
    assert 'backend: "python"' in emb and "count: 3 kind: KIND_CPU" in emb
    assert 'backend: "onnxruntime"' in gpu and "count: 3 kind: KIND_GPU" in gpu


def test_bad_repository_settings_raise():
    with pytest.raises(ConfigError, match="instance_count"):
        RepositorySettings(instance_count=0)
    with pytest.raises(ConfigError, match="variant"):
        config_pbtxt("m", ModelIO((40,), 10), "tpu", RepositorySettings())


def test_imported_models_keep_their_tensor_names_and_image_shape():
    """Catches a renderer that still writes the built zoos' INPUT/PROBS names or a flat [D] input: Triton would
    refuse the imported ONNX file (names and dims must match the graph)."""
    io = ModelIO((3, 32, 32), 100, input_name="image", output_name="logits_softmax")
    for variant in ("embedded", "gpu"):
        text = config_pbtxt("m", io, variant, RepositorySettings())
        assert 'input [ { name: "image" data_type: TYPE_FP32 dims: [ 3, 32, 32 ] } ]' in text
        assert 'output [ { name: "logits_softmax" data_type: TYPE_FP32 dims: [ 100 ] } ]' in text
