"""The real router process in front of a real Triton: selection, answers, bad input, metrics, recovery."""

import itertools
import json
import time

import numpy as np
import pytest
import requests

from common.ports import free_port

from stack.triton_server import TritonServer
from router.audit_log import read_audit_log
from router.goodput import goodput_by_client
from tests.conftest import infer
from zoo.export import open_session, run_onnx


@pytest.fixture(params=[1, 2], ids=["1worker", "2workers"])
def router(start_router, request):
    """The API behaves the same with one router process and with two behind one port."""
    return start_router(workers=request.param, metrics_port=free_port("127.0.0.1"))


def audit(router):
    return list(read_audit_log(router.audit_path))


def test_answer_has_probabilities_and_labels_and_never_the_model(router, manifest, zoo_dir, data):
    x = data.x["test"][:5]
    r = infer(router, x, min_accuracy=0.0)
    assert r.status_code == 200
    body = r.json()
    assert set(body) == {"request_id", "probabilities", "labels"}
    assert not any(m.name in r.text for m in manifest.models)
    served = audit(router)[-1]["model"]
    direct = run_onnx(open_session(zoo_dir / manifest.model(served).onnx_file), x)
    np.testing.assert_allclose(np.array(body["probabilities"]), direct, atol=1e-6)
    assert body["labels"] == direct.argmax(1).tolist()


def test_selection_respects_requirements_over_a_grid(router, manifest, data):
    accs = sorted({m.accuracy for m in manifest.models})
    lats = sorted({m.selection_latency_ms for m in manifest.models})
    grid_acc = [None, 0.0] + [a - 1e-9 for a in accs] + [a + 1e-9 for a in accs[-2:]]
    grid_lat = [None, lats[0] / 2] + [l + 1e-9 for l in lats]
    x = data.x["test"][:1]
    sent = []
    for a, l in itertools.product(grid_acc, grid_lat):
        for _ in range(2):
            sent.append((a, l, infer(router, x, min_accuracy=a, max_latency_ms=l).status_code))
    records = audit(router)
    assert len(records) == len(sent)
    front = manifest.pareto_models()
    for (a, l, status), rec in zip(sent, records):
        feasible = [m.name for m in front if (a is None or m.accuracy >= a) and (l is None or m.selection_latency_ms <= l)]
        if feasible:
            assert status == 200 and rec["model"] in feasible
        else:
            assert status == 422 and rec["outcome"] == "no_model"


BAD = [
    ("malformed json", b'{"inputs": [[1, 2', {}, 400, "malformed_json"),
    ("wrong width", None, {"inputs": [[0.0] * 3]}, 422, "needs 40"),
    ("ragged batch", None, {"inputs": [[0.0] * 40, [0.0] * 39]}, 422, "inputs[1]"),
    ("strings", None, {"inputs": [["a"] * 40]}, 422, "inputs.0.0"),
    ("not a list", None, {"inputs": 3}, 422, "inputs"),
    ("nan", b'{"inputs": [[NaN' + b", 0.0" * 39 + b"]]}", {}, 422, "finite"),
    ("float32 overflow", None, {"inputs": [[1e39] * 40]}, 422, "float32"),
    ("empty batch", None, {"inputs": []}, 422, "empty"),
    ("oversized batch", None, {"inputs": [[0.0] * 40] * 9}, 422, "exceeds the limit of 8"),
    ("accuracy above 1", None, {"inputs": [[0.0] * 40], "min_accuracy": 1.5}, 422, "min_accuracy"),
    ("negative latency", None, {"inputs": [[0.0] * 40], "max_latency_ms": -1}, 422, "max_latency_ms"),
    ("unknown field", None, {"inputs": [[0.0] * 40], "model": "gru"}, 422, "model: Extra inputs"),
    ("missing inputs", None, {"min_accuracy": 0.5}, 422, "inputs"),
    ("oversized body", None, {"inputs": [[0.0] * 40], "pad": "x" * 5000}, 413, "exceeds the limit"),
]


@pytest.mark.parametrize("workers", [1, 2])
def test_every_bad_input_gets_its_4xx_and_an_audit_record(start_router, data, workers):
    router = start_router(max_batch_size=8, max_body_bytes=4096, workers=workers)
    url, key = f"{router.url}/v1/infer", {"x-api-key": "k-benign"}
    for name, raw, body, status, text in BAD:
        r = requests.post(url, data=raw if raw is not None else json.dumps(body), timeout=10,
                          headers=key | {"content-type": "application/json"})
        assert r.status_code == status, name
        assert text in r.json()["detail"] or text == r.json()["error"], (name, r.json())
    r = requests.post(url, data="x", headers=key | {"content-type": "text/plain"}, timeout=10)
    assert r.status_code == 415 and r.json()["error"] == "unsupported_media_type"
    for headers in ({}, {"x-api-key": "stolen"}):
        r = requests.post(url, json={"inputs": [[0.0] * 40]}, headers=headers, timeout=10)
        assert r.status_code == 401 and r.json()["error"] == "unauthorized"
    assert infer(router, data.x["test"][:2]).status_code == 200  # still serving
    records = audit(router)
    assert len(records) == len(BAD) + 4
    assert [r["status"] for r in records[: len(BAD)]] == [b[3] for b in BAD]
    assert records[-2]["outcome"] == "unauthorized" and records[-1]["outcome"] == "served"


def test_public_endpoints(router, manifest, data):
    zoo = requests.get(f"{router.url}/v1/zoo", timeout=10)
    assert zoo.status_code == 200 and not any(m.name in zoo.text for m in manifest.models)
    assert zoo.json()["accuracy_range"] == [round(min(m.accuracy for m in manifest.models), 4),
                                            round(max(m.accuracy for m in manifest.models), 4)]
    assert requests.get(f"{router.url}/healthz", timeout=10).json() == {"status": "ok", "backend_ready": True}
    spec = requests.get(f"{router.url}/openapi.json", timeout=10).json()
    assert "/v1/infer" in spec["paths"] and "min_accuracy" in json.dumps(spec["paths"]["/v1/infer"])
    infer(router, data.x["test"][:1], min_accuracy=0.0)
    infer(router, data.x["test"][:1], min_accuracy=1.0)
    # /metrics names clients and counts met requirements: on its own listener only, 404 on the client's
    listener = f"http://127.0.0.1:{json.loads(router.settings_path.read_text())['metrics_port']}"
    hidden = requests.get(f"{router.url}/metrics", timeout=10)
    assert hidden.status_code == 404 and "benign" not in hidden.text
    assert requests.post(f"{listener}/v1/infer", json={}, headers={"x-api-key": "k-benign"}).status_code == 404
    metrics = requests.get(f"{listener}/metrics", timeout=10).text
    assert 'psml_requests_total{client="benign",outcome="served"} 1.0' in metrics
    assert 'psml_requests_total{client="benign",outcome="no_model"} 1.0' in metrics
    assert 'psml_goodput_ratio{client="benign"} 0.5' in metrics


def _models_served(router, x, n=40):
    for _ in range(n):
        assert infer(router, x, min_accuracy=0.0).status_code == 200
    return [r["model"] for r in audit(router)]


def test_noise_defense_changes_selection_reproducibly(start_router, manifest, data):
    # without noise, asking for exactly the most accurate model always reaches it
    best = max(manifest.pareto_models(), key=lambda m: m.accuracy)
    x = data.x["test"][:1]
    plain = start_router("plain", policy="fastest_feasible")
    for _ in range(10):
        infer(plain, x, min_accuracy=best.accuracy)
    assert {r["model"] for r in audit(plain)} == {best.name}
    noise = [{"name": "metric_noise", "distribution": "laplace", "accuracy_scale": 0.2, "latency_scale_ms": 0.0}]
    runs = []
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        r = start_router(name, policy="fastest_feasible", defenses=noise, seed=seed, on_no_model="closest")
        for _ in range(30):
            infer(r, x, min_accuracy=best.accuracy)
        runs.append([(rec["model"], rec["eff_min_accuracy"]) for rec in audit(r)])
    assert runs[0] == runs[1] and runs[0] != runs[2]
    assert len({m for m, _ in runs[0]}) >= 2  # the noise moved some queries off the target


def test_triton_down_gives_503_then_the_router_recovers(start_router, zoo_dir, data, workers=2):
    """Two workers (each holds its own backend client: both must fail over and recover; one worker runs the same
    code, so the one-worker run was dropped to keep the suite within CI's time)."""
    from common.ports import free_port

    ports = [free_port() for _ in range(3)]
    server = TritonServer(zoo_dir / "embedded", *ports).start()
    router = start_router("recover", endpoints=server.endpoints, request_timeout_ms=2000, workers=workers)
    x = data.x["test"][:2]
    try:
        assert infer(router, x).status_code == 200
        server.stop()
        down = infer(router, x)
        assert down.status_code == 503 and down.json()["error"] == "backend_unavailable"
        assert requests.get(f"{router.url}/healthz", timeout=10).json()["backend_ready"] is False
        server = TritonServer(zoo_dir / "embedded", *ports).start()
        deadline, status = time.monotonic() + 30, None
        while time.monotonic() < deadline and status != 200:
            status = infer(router, x).status_code
            time.sleep(0.2)
        assert status == 200
    finally:
        server.stop()
    outcomes = [r["outcome"] for r in audit(router)]
    assert outcomes[0] == "served" and "unavailable" in outcomes and outcomes[-1] == "served"
    assert goodput_by_client(audit(router))["benign"]["drop_rate"] > 0


@pytest.mark.parametrize("mechanism", ["exponential_mechanism", "permute_and_flip"])
def test_dp_selection_frequencies_on_the_live_router_match_the_mechanism(start_router, manifest, data, mechanism):
    """Live frequencies fit the mechanism's probabilities and reject the plausible wrong samplers: uniform over
    the front (epsilon ignored) and the same mechanism at half the epsilon. Epsilon is chosen for power on this
    zoo: the first at which both wrong samplers' expected chi-square distance is >= 40 (they then fail at
    p < 1e-3 with probability ~0.999) while every model keeps >= 10 expected answers (so the test is valid)."""
    from scipy.stats import chisquare

    from router.requirements import Requirements
    from router.zoo_view import ZooView
    from tests.router.test_selection import _permute_and_flip_exact
    from router.defenses.exponential_mechanism import exponential_probabilities, utilities

    n = 600
    target = max(manifest.pareto_models(), key=lambda m: m.accuracy)
    req = Requirements(target.accuracy, None)
    zoo = ZooView.from_manifest(manifest)
    u = utilities(zoo, req)
    probs = lambda e: exponential_probabilities(u, e) if mechanism == "exponential_mechanism" else _permute_and_flip_exact(u, e)
    uniform = np.full(len(u), 1 / len(u))
    power = lambda e, alt: n * float(np.sum((probs(e) - alt) ** 2 / alt))
    eps = next((e for e in np.arange(0.5, 64, 0.25) if power(e, uniform) >= 40 and n * probs(e).min() >= 10
                and power(e, probs(e / 2)) >= 40), None)
    assert eps is not None, f"no epsilon separates the mechanism from uniform on this front (utilities {u})"
    r = start_router(mechanism, defenses=[{"name": mechanism, "epsilon": float(eps)}], seed=11)
    for _ in range(n):
        assert infer(r, data.x["test"][:1], min_accuracy=target.accuracy).status_code == 200
    served = [rec["model"] for rec in audit(r)]
    counts = np.array([served.count(m.name) for m in zoo.pareto])
    assert counts.sum() == n
    assert chisquare(counts, n * probs(eps)).pvalue > 1e-3
    assert chisquare(counts, n * uniform).pvalue < 1e-3  # epsilon ignored
    assert chisquare(counts, n * probs(eps / 2)).pvalue < 1e-3  # epsilon halved (e.g. sensitivity counted twice)


def test_model_pinning_is_refused_unless_the_router_is_a_profiling_one(start_router, manifest, data):
    """A deployment must never let a client skip selection (and every defense) by naming a model."""
    x, slowest = data.x["test"][:2], max(manifest.models, key=lambda m: m.selection_latency_ms)
    url = lambda r: f"{r.url}/v1/infer"
    pin = {"x-api-key": "k-benign", "x-psml-model": slowest.name}
    deployed = start_router("deployed")
    r = requests.post(url(deployed), json={"inputs": x.tolist()}, headers=pin, timeout=10)
    assert r.status_code == 403 and "allow_pinned_model" in r.json()["detail"]
    assert audit(deployed)[-1]["outcome"] == "unauthorized"
    profiling = start_router("profiling", allow_pinned_model=True)
    fast = min(m.selection_latency_ms for m in manifest.models)
    for _ in range(5):  # a latency bound only the fastest model meets: the pinned (slowest) model serves anyway
        assert requests.post(url(profiling), json={"inputs": x.tolist(), "max_latency_ms": fast}, headers=pin,
                             timeout=10).status_code == 200
    assert [a["model"] for a in audit(profiling)] == [slowest.name] * 5
    r = requests.post(url(profiling), json={"inputs": x.tolist()}, headers=pin | {"x-psml-model": "nope"}, timeout=10)
    assert r.status_code == 422 and "'nope' is not a model" in r.json()["detail"]


def _binary(router, x, dtype="float32", key="k-benign", **headers):
    body = np.ascontiguousarray(x, dtype=np.dtype(dtype).newbyteorder("<")).tobytes()
    h = {"x-api-key": key, "content-type": "application/octet-stream", "x-psml-shape": f"{len(x)},{x.shape[1]}",
         "x-psml-dtype": dtype} | headers
    return requests.post(f"{router.url}/v1/infer", data=body, headers=h, timeout=30)


def test_binary_requests_answer_like_json_and_bad_ones_get_their_4xx(start_router, manifest, data):
    """Catches a binary path that reads the bytes with the wrong order, dtype or shape (its probabilities would
    differ from the JSON answer), skips the requirement headers, or lets a mismatched body through."""
    router = start_router(policy="fastest_feasible", max_batch_size=64)
    best = max(manifest.pareto_models(), key=lambda m: m.accuracy)
    x = data.x["test"][:32].astype(np.float32)
    as_json = infer(router, x, min_accuracy=best.accuracy)
    for dtype in ("float32", "float64"):
        as_bytes = _binary(router, x, dtype, **{"x-psml-min-accuracy": str(best.accuracy)})
        assert as_bytes.status_code == 200, as_bytes.text
        np.testing.assert_allclose(as_bytes.json()["probabilities"], as_json.json()["probabilities"], atol=1e-6)
    assert {r["model"] for r in audit(router)} == {best.name}  # the header requirement reached selection
    bad = [
        ("no shape", {"x-psml-shape": None}, 422, "x-psml-shape"),
        ("shape not two ints", {"x-psml-shape": "32"}, 422, "x-psml-shape"),
        ("length mismatch", {"x-psml-shape": f"31,{x.shape[1]}"}, 422, "does not match"),
        ("wrong width", {"x-psml-shape": f"{32 * x.shape[1] // 8},8"}, 422, "every sample needs"),
        ("unknown dtype", {"x-psml-dtype": "int8"}, 422, "unknown dtype"),
        ("accuracy above 1", {"x-psml-min-accuracy": "1.5"}, 422, "x-psml-min-accuracy"),
        ("latency not a number", {"x-psml-max-latency-ms": "fast"}, 422, "not a number"),
    ]
    before = len(audit(router))
    for name, headers, status, text in bad:
        h = {k: v for k, v in headers.items() if v is not None}
        r = _binary(router, x, **h) if None not in headers.values() else requests.post(
            f"{router.url}/v1/infer", data=x.tobytes(), timeout=10,
            headers={"x-api-key": "k-benign", "content-type": "application/octet-stream"})
        assert r.status_code == status and text in r.json()["detail"], (name, r.text)
    big = np.zeros((65, x.shape[1]), np.float32)
    r = _binary(router, big)
    assert r.status_code == 422 and "exceeds the limit of 64" in r.json()["detail"]
    nan = x.copy()
    nan[0, 0] = np.nan
    assert _binary(router, nan).status_code == 422
    records = audit(router)[before:]
    assert len(records) == len(bad) + 2 and all(r["outcome"] == "invalid" for r in records)
    assert _binary(router, x).status_code == 200  # still serving


def test_admission_control_sheds_at_once_per_router_and_per_client(start_router, data):
    """Catches a router without a bound (no 503 however many requests wait) and a per-client bound that is
    really global (the benign client, one request at a time, would be refused while the attacker floods)."""
    import concurrent.futures as cf

    x = data.x["test"][:256]
    flood = start_router("flood", max_in_flight=2, max_in_flight_per_client=None, max_batch_size=256)

    def send(_):
        with requests.Session() as s:
            return [s.post(f"{flood.url}/v1/infer", json={"inputs": x.tolist()}, headers={"x-api-key": "k-attacker"},
                           timeout=30) for _ in range(6)]

    with cf.ThreadPoolExecutor(12) as ex:
        answers = [a for batch in ex.map(send, range(12)) for a in batch]
    shed = [a for a in answers if a.status_code == 503]
    assert shed and all(a.json()["error"] == "overloaded" and a.headers["retry-after"] == "1" for a in shed)
    assert {a.status_code for a in answers} <= {200, 503} and any(a.status_code == 200 for a in answers)
    records = audit(flood)
    assert sum(r["outcome"] == "shed" for r in records) == len(shed)
    assert goodput_by_client(records)["attacker"]["shed_rate"] == len(shed) / len(answers)

    per_client = start_router("per_client", max_in_flight=None, max_in_flight_per_client=1, max_batch_size=256)
    url = f"{per_client.url}/v1/infer"
    with cf.ThreadPoolExecutor(9) as ex:
        attackers = [ex.submit(lambda: [requests.post(url, json={"inputs": x.tolist()}, headers={"x-api-key": "k-attacker"},
                                                      timeout=30).status_code for _ in range(8)]) for _ in range(8)]
        benign = [requests.post(url, json={"inputs": x[:1].tolist()}, headers={"x-api-key": "k-benign"},
                                timeout=30).status_code for _ in range(20)]
        attacker_codes = [c for f in attackers for c in f.result()]
    assert set(benign) == {200}
    assert 429 in attacker_codes and set(attacker_codes) <= {200, 429}


def test_triton_timeout_gives_504_json_that_never_names_the_model(start_router, manifest, data):
    """A Triton that accepts the call and never answers (a hung server, injected as a real socket that reads and
    stays silent): 504 with a JSON reason after request_timeout_ms, an audit record with the real cause, the
    router still up. Catches a timeout answered as 500 or 503, a hung request, a body that leaks the selected
    model's name (a free fingerprint), and a router that dies on it. (A tiny timeout against the real Triton is
    no test: a fast answer can arrive in the same loop turn as the timer.)"""
    import socket
    import threading
    from types import SimpleNamespace

    server = socket.create_server(("127.0.0.1", 0))
    held = []

    def accept_and_stay_silent():
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            held.append(conn)

    threading.Thread(target=accept_and_stay_silent, daemon=True).start()
    port = server.getsockname()[1]
    try:
        r = start_router("hung", endpoints=SimpleNamespace(http_url=f"127.0.0.1:{port}", grpc_url=f"127.0.0.1:{port}"),
                         request_timeout_ms=300)
        x = data.x["test"][:2]
        t0 = time.perf_counter()
        answers = [infer(r, x) for _ in range(3)]
        assert time.perf_counter() - t0 < 10
        assert [a.status_code for a in answers] == [504] * 3
        assert all(a.json()["error"] == "backend_timeout" for a in answers)
        assert not any(m.name in a.text for a in answers for m in manifest.models)
        recs = audit(r)
        assert len(recs) == 3 and all(rec["outcome"] == "unavailable" and "did not answer" in rec["detail"] for rec in recs)
        assert requests.get(f"{r.url}/healthz", timeout=10).status_code == 200
    finally:
        server.close()
        for c in held:
            c.close()


def test_a_model_triton_has_not_loaded_gives_503_without_its_name(start_router, manifest, zoo_dir, data, tmp_path):
    """Triton up, but without the model the router selects (a repository missing it, as when one model failed to
    load): 503 for that model only, the body never naming it, the audit log keeping Triton's reason."""
    import shutil

    from common.ports import free_port

    best = max(manifest.pareto_models(), key=lambda m: m.accuracy)
    repo = tmp_path / "repo"
    shutil.copytree(zoo_dir / "embedded", repo)
    shutil.rmtree(repo / best.name)
    with TritonServer(repo, *[free_port() for _ in range(3)]) as server:
        r = start_router("partial", endpoints=server.endpoints, policy="fastest_feasible")
        x = data.x["test"][:2]
        missing = infer(r, x, min_accuracy=best.accuracy)
        assert missing.status_code == 503 and missing.json()["error"] == "backend_unavailable"
        assert not any(m.name in missing.text for m in manifest.models)
        assert infer(r, x, min_accuracy=0.0).status_code == 200  # another model still serves
        rec = audit(r)[0]
        assert rec["model"] == best.name and best.name in rec["detail"] and rec["outcome"] == "unavailable"


def test_concurrent_requests_batched_by_triton_each_get_their_own_answer(start_router, manifest, zoo_dir, data,
                                                                         triton):
    """Triton's dynamic batcher merges concurrent requests and the Python backend splits the result: every answer
    must be the one its own input gets alone. Catches rows returned to the wrong request, or a batch split at the
    wrong offsets (different batch sizes in flight together)."""
    from concurrent.futures import ThreadPoolExecutor

    r = start_router("batched", policy="fastest_feasible")
    best = max(manifest.pareto_models(), key=lambda m: m.accuracy)
    session = open_session(zoo_dir / best.onnx_file)
    sizes = [1, 3, 2, 5, 1, 4, 2, 1] * 8
    starts = np.cumsum([0] + sizes[:-1]) % (len(data.x["test"]) - 8)
    inputs = [data.x["test"][s : s + n] for s, n in zip(starts, sizes)]

    def ask(x):
        return infer(r, x, min_accuracy=best.accuracy)

    def stats():
        import tritonclient.http as http

        c = http.InferenceServerClient(triton.endpoints.http_url)
        st = c.get_inference_statistics(best.name)["model_stats"][0]
        c.close()
        return st["inference_count"], st["execution_count"]

    before = stats()
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(ask, inputs))
    after = stats()
    samples, executions = after[0] - before[0], after[1] - before[1]
    assert samples == sum(sizes) and executions < len(inputs)  # Triton did merge requests into batches
    for x, a in zip(inputs, answers):
        assert a.status_code == 200
        np.testing.assert_allclose(np.array(a.json()["probabilities"]), run_onnx(session, x), atol=1e-5)
    assert {rec["model"] for rec in audit(r)} == {best.name}
