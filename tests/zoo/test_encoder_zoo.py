"""Encoder zoos end to end: SimCLR encoders built, served through a real Triton and router on /v1/embed,
fingerprinted, and stolen by direct extraction."""

import subprocess
import sys

import numpy as np
import pytest
import requests

from attacks.encoder_extraction import EncoderExtractionSettings, VictimReference, extract_encoder
from attacks.experiment import consistency, front_by_accuracy, run_fingerprint
from common.errors import ConfigError
from router.defenses import check_combination, make_defense
from router.zoo_view import ZooView
from stack.clients import DirectTriton, RouterClient
from stack.loopback import DEMO_KEYS, router_for, triton_for
from zoo.data import Dataset
from zoo.export import open_session, run_onnx
from zoo.manifest import load_manifest
from zoo.ssl import fit_probe


@pytest.fixture(scope="module")
def stack(encoder_zoo, tmp_path_factory):
    run = tmp_path_factory.mktemp("encoder-stack")
    with triton_for(encoder_zoo, run) as triton, router_for(encoder_zoo, run, triton, api_keys=DEMO_KEYS) as router:
        yield triton, router


def test_encoder_manifest_scores_each_encoder_by_its_linear_probe(encoder_zoo):
    """The probe accuracy recomputed here from the ONNX files: catches an accuracy taken from the wrong split, a
    softmax left on the embeddings, or a probe fit on the test split; and the untrained baseline recomputed from
    the architecture's initial weights (catches a baseline taken after training or with another seed)."""
    from zoo.architectures import build_model
    from zoo.ssl import embed

    m = load_manifest(encoder_zoo)
    data = Dataset.load(encoder_zoo / "data.npz")
    assert m.zoo.kind == "encoder" and m.profile.settings["embedding_dim"] == 64
    for i, e in enumerate(m.models):
        init = build_model(e.architecture, tuple(data.sample_shape), 64, seed=m.zoo.seed + i)
        untrained = fit_probe(embed(init, data.x["victim_train"]), data.y["victim_train"])
        assert e.untrained_accuracy == pytest.approx(untrained.accuracy(embed(init, data.x["test"]), data.y["test"]),
                                                     abs=0.01)
        assert (e.output.name, e.output.shape) == ("EMBEDDING", [-1, 64])
        session = open_session(encoder_zoo / e.onnx_file)
        train, test = run_onnx(session, data.x["victim_train"]), run_onnx(session, data.x["test"])
        assert not np.allclose(test.sum(1), 1.0)  # embeddings, not probabilities
        probe = fit_probe(train, data.y["victim_train"])
        assert e.accuracy == pytest.approx(probe.accuracy(test, data.y["test"]), abs=0.01)
        assert e.parity.n == len(data.y["test"]) and e.parity.top1_mismatches == 0
    cnn = next(e for e in m.models if e.name == "cnn_small")
    assert cnn.accuracy > cnn.untrained_accuracy + 0.05  # SimCLR taught it something random weights lack
    for variant in ("embedded", "gpu"):
        cfg = (encoder_zoo / variant / m.models[0].name / "config.pbtxt").read_text()
        assert 'output [ { name: "EMBEDDING" data_type: TYPE_FP32 dims: [ 64 ] } ]' in cfg


def test_embed_answers_the_selected_encoders_embeddings_and_infer_is_404(encoder_zoo, stack):
    """Catches an /v1/embed that answers probabilities or another model's embeddings, and a wrong endpoint that
    answers 200, 500 or a non-JSON body."""
    _, router = stack
    m = load_manifest(encoder_zoo)
    best = max(m.models, key=lambda e: e.accuracy)
    data = Dataset.load(encoder_zoo / "data.npz")
    x = data.x["test"][:4]
    key = {"x-api-key": "demo-benign-key"}
    r = requests.post(f"{router.url}/v1/embed", json={"inputs": x.tolist(), "min_accuracy": best.accuracy},
                      headers=key, timeout=30)
    assert r.status_code == 200 and set(r.json()) == {"request_id", "embeddings"}
    np.testing.assert_allclose(np.array(r.json()["embeddings"]), run_onnx(open_session(encoder_zoo / best.onnx_file), x),
                               atol=1e-4)
    wrong = requests.post(f"{router.url}/v1/infer", json={"inputs": x.tolist()}, headers=key, timeout=30)
    assert wrong.status_code == 404 and wrong.json()["error"] == "wrong_endpoint" and "/v1/embed" in wrong.json()["detail"]
    info = requests.get(f"{router.url}/v1/zoo", timeout=10).json()
    assert info["kind"] == "encoder" and info["embedding_dim"] == 64 and info["endpoint"] == "/v1/embed"
    assert requests.post(f"{router.url}/v1/embed", json={"inputs": x[:1].tolist()}, headers=key,
                         timeout=30).status_code == 200  # still serving


def test_b4b_noise_reaches_the_returned_embeddings_live(encoder_zoo, stack, tmp_path):
    """A B4B router (one hash bit per two buckets: a key covers the space at once) beside the exact encoder:
    a key that covers the space gets embeddings off the encoder's by about sigma x rms, and its audit records
    carry that sigma. Catches noise computed and audited but dropped from the answer (the audit fields alone
    would pass) and noise applied to another key's answers."""
    triton, _ = stack
    m = load_manifest(encoder_zoo)
    best = max(m.models, key=lambda e: e.accuracy)
    x = Dataset.load(encoder_zoo / "data.npz").x["attacker_pool"][:64]
    exact = run_onnx(open_session(encoder_zoo / best.onnx_file), x)
    with router_for(encoder_zoo, tmp_path, triton, "b4b", api_keys=DEMO_KEYS,
                    defenses=[{"name": "b4b", "hash_bits": 1, "beta": 1.0, "max_sigma": 0.5}]) as router:
        key, answers = {"x-api-key": "demo-attacker-key"}, []
        for i in range(0, 64, 16):
            r = requests.post(f"{router.url}/v1/embed", json={"inputs": x[i : i + 16].tolist(),
                                                               "min_accuracy": best.accuracy}, headers=key, timeout=30)
            assert r.status_code == 200, r.text
            answers.append(np.array(r.json()["embeddings"]))
        from router.audit_log import read_audit_log

        sigmas = [rec["b4b_sigma"] for rec in read_audit_log(router.audit_path) if rec.get("outcome") == "served"]
    got = np.concatenate(answers)
    rms = np.linalg.norm(exact, axis=1, keepdims=True) / np.sqrt(exact.shape[1])
    rel = (got - exact)[32:] / rms[32:]  # both buckets hit by then: sigma at full coverage, 0.5
    assert sigmas[-1] == pytest.approx(0.5) and rel.std() == pytest.approx(0.5, rel=0.15)


def test_embed_on_a_classifier_zoo_is_404_naming_infer(start_router, data):
    r = start_router()
    a = requests.post(f"{r.url}/v1/embed", json={"inputs": data.x["test"][:1].tolist()},
                      headers={"x-api-key": "k-benign"}, timeout=30)
    assert a.status_code == 404 and "/v1/infer" in a.json()["detail"]


def test_classifier_only_defenses_are_refused_on_an_encoder_zoo():
    zoo = ZooView((), 40, 64, kind="encoder")
    for spec in ({"name": "round_probabilities", "decimals": 2}, {"name": "prada"}):
        with pytest.raises(ConfigError, match="answer embeddings"):
            check_combination([make_defense(spec)], zoo)
    check_combination([make_defense({"name": "metric_noise", "accuracy_scale": 0.02, "latency_scale_ms": 0.1})], zoo)


@pytest.mark.timeout(900)
def test_fingerprint_then_steal_the_most_accurate_encoder(encoder_zoo, stack):
    """The staircase reaches the most accurate encoder over /v1/embed; MSE extraction through the router with that
    specification reproduces the victim's embeddings (cosine far above an untrained encoder's) and its probe
    agrees with the victim's more than the untrained one does."""
    triton, router = stack
    m = load_manifest(encoder_zoo)
    data = Dataset.load(encoder_zoo / "data.npz")
    target = front_by_accuracy(m)[0]
    fp = run_fingerprint("staircase", router.url, "demo-attacker-key", data.x["attacker_pool"][:1], 1,
                         endpoint="/v1/embed")
    assert fp.spec is not None
    c = consistency(router.url, "demo-attacker-key", router.audit_path, fp.spec, data.x["attacker_pool"][1:41],
                    target.name, "/v1/embed")
    assert c["consistency"] >= 0.95, c
    session = open_session(encoder_zoo / target.onnx_file)
    ref = VictimReference.from_embeddings(run_onnx(session, data.x["victim_train"]), data.y["victim_train"],
                                          run_onnx(session, data.x["test"]), data.y["test"])
    s = EncoderExtractionSettings(budget=400, loss="mse", surrogate="cnn_large", epochs=30)
    client = RouterClient(router.url, "demo-attacker-key", endpoint="/v1/embed")
    try:
        r = extract_encoder(client, data.x["attacker_pool"], data, ref, s, dict(fp.spec))
    finally:
        client.close()
    assert r["answers"] == 400 and r["queries_over_training_set"] == pytest.approx(400 / len(data.y["victim_train"]))
    assert r["cosine"] > 0.7 and r["cosine"] > r["untrained_cosine"] + 0.3, r
    assert r["agreement"] > r["untrained_agreement"] + 0.03, r  # measured 0.752 vs 0.670
    direct = DirectTriton.for_entry(triton.endpoints.http_url, target)
    try:
        np.testing.assert_allclose(direct.infer(data.x["test"][:3]), run_onnx(session, data.x["test"][:3]), atol=1e-4)
    finally:
        direct.close()


def test_cli_extract_kind_encoder_refuses_a_classifier_zoo(zoo_dir, tmp_path):
    p = subprocess.run([sys.executable, "-m", "psml.cli", "attack", "extract", "--zoo", str(zoo_dir), "--kind",
                        "encoder", "--out", str(tmp_path / "x.json")], capture_output=True, text=True, timeout=120)
    assert p.returncode != 0 and "--kind encoder needs an encoder zoo" in p.stderr
    assert not (tmp_path / "x.json").exists()


def test_b4b_in_the_router_perturbs_a_sweeping_key_more_than_a_narrow_one(encoder_zoo, stack, tmp_path):
    """The router hands b4b each key's clean embeddings and returns its noisy ones: a key sending the whole pool
    covers more buckets and gets answers further from the model's than a key repeating one sample."""
    from router.audit_log import read_audit_log

    triton, _ = stack
    m = load_manifest(encoder_zoo)
    data = Dataset.load(encoder_zoo / "data.npz")
    best = max(m.models, key=lambda e: e.accuracy)
    clean = run_onnx(open_session(encoder_zoo / best.onnx_file), data.x["attacker_pool"][:400])
    with router_for(encoder_zoo, tmp_path, triton, api_keys=DEMO_KEYS,
                    defenses=[{"name": "b4b", "hash_bits": 6, "beta": 2.0, "max_sigma": 1.0}]) as router:
        sweep = RouterClient(router.url, "demo-attacker-key", endpoint="/v1/embed")
        narrow = RouterClient(router.url, "demo-benign-key", endpoint="/v1/embed")
        got_sweep = np.concatenate([sweep.infer(data.x["attacker_pool"][i : i + 25], best.accuracy)
                                    for i in range(0, 400, 25)])
        got_narrow = np.concatenate([narrow.infer(data.x["attacker_pool"][:1], best.accuracy) for _ in range(16)])
        sweep.close(), narrow.close()
        audit = list(read_audit_log(router.audit_path))
    last = {r["client"]: r for r in audit}
    assert last["attacker"]["b4b_coverage"] > 5 * last["benign"]["b4b_coverage"]
    err = lambda got, ref: float(np.mean(np.linalg.norm(got - ref, axis=1) / np.linalg.norm(ref, axis=1)))
    assert err(got_sweep[-100:], clean[-100:]) > 2 * err(got_narrow, np.repeat(clean[:1], 16, 0)) + 0.05
