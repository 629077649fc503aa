"""Attacks on the deployment itself, each against the real router (and a real Triton) on loopback.

Every test here failed against the router before the deployment issue was fixed (the figure it saw is in
its docstring) and names the wrong implementation it catches.
"""

import os
import re
import socket
import time

import numpy as np
import pytest
import requests

from attacks.metrics_oracle import MetricsUnavailable, diverted
from attacks.seed_replay import SeedReplaySettings, prediction_share, predicted_models
from common.ports import free_port
from router.audit_log import read_audit_log
from router.requirements import Requirements
from router.zoo_view import ZooView
from stack.clients import RouterClient
from tests.conftest import infer


def _served_models(router, start=0):
    return [r["model"] for r in list(read_audit_log(router.audit_path))[start:]]


def test_default_seed_is_drawn_from_entropy_recorded_and_replayable(start_router, manifest, data):
    """Before: seed 0 by default, the model for 60 of 60 requests predicted from the public code. Catches a
    constant default seed (prediction near 1.0), a recorded seed that is not the one used (the replay would
    not match), and a seed that is not recorded at all."""
    zoo = ZooView.from_manifest(manifest)
    assert len(zoo.pareto) >= 2  # a randomised choice to predict
    x, n = data.x["test"][:1], 60
    live = start_router("entropy", seed=None)
    for _ in range(n):
        assert infer(live, x, min_accuracy=0.0).status_code == 200
    records = list(read_audit_log(live.audit_path))
    seeds = {r["seed"] for r in records}
    assert len(seeds) == 1 and isinstance(seeds.pop(), int)
    seed = records[0]["seed"]
    asks = [Requirements(0.0, None)] * n
    guessed = prediction_share(predicted_models(zoo, asks, SeedReplaySettings(guessed_seed=0)), _served_models(live))
    assert guessed < 0.8  # chance is 1 / front size; P(>= 48 of 60 | 0.5) ~ 2e-6
    # the recorded seed replays the run exactly: an experiment can be repeated, and the attack is real
    replay = start_router("replay", seed=seed)
    for _ in range(n):
        assert infer(replay, x, min_accuracy=0.0).status_code == 200
    assert _served_models(replay) == _served_models(live)
    assert prediction_share(predicted_models(zoo, asks, SeedReplaySettings(guessed_seed=seed)),
                            _served_models(replay)) == 1.0


def _raw(port: int, head: bytes) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(head)
    return s


def _response(sock: socket.socket) -> bytes:
    out = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, socket.timeout):
            break
        if not chunk:
            break
        out += chunk
    return out


STALL = (b"POST /v1/infer HTTP/1.1\r\nhost: x\r\nx-api-key: k-attacker\r\ncontent-type: application/json\r\n"
         b"content-length: 1000\r\n\r\n{")


def test_stalled_bodies_cost_connections_not_slots(start_router, data):
    """Before: 64 connections sending headers and '{' held every admission slot; every other client got 503
    for as long as they stalled. Catches admission taken before the body is read, a body read without a
    deadline (the stalled connections would never get their 408), and bodies of one key without a bound (all
    80 would be held: here 16, max_in_flight_per_client, wait for their 408 and the rest get 429 at once)."""
    router = start_router("slow", body_timeout_ms=1500.0)
    port = int(router.url.rsplit(":", 1)[1])
    stalled = [_raw(port, STALL) for _ in range(80)]
    time.sleep(0.3)
    codes = [infer(router, data.x["test"][:4]).status_code for _ in range(10)]
    assert codes == [200] * 10
    answers = [_response(s) for s in stalled]  # each waits for its answer and the close
    timed_out = [a for a in answers if a.startswith(b"HTTP/1.1 408") and b'"error":"request_timeout"' in a]
    refused = [a for a in answers if a.startswith(b"HTTP/1.1 429") and b"request bodies" in a]
    assert len(timed_out) == 16 and len(refused) == 64
    for s in stalled:
        s.close()
    records = [r for r in read_audit_log(router.audit_path) if r["client"] == "attacker"]
    assert sorted(r["status"] for r in records) == [408] * 16 + [429] * 64


def test_headers_trickled_slowly_are_cut_at_the_header_deadline(start_router):
    """Catches a router that relies on uvicorn's keep-alive timer alone (cancelled by the first byte of a
    request: a header line every 0.3 s holds the connection for ever)."""
    router = start_router("trickle", header_timeout_ms=1000.0)
    s = _raw(int(router.url.rsplit(":", 1)[1]), b"POST /v1/infer HTTP/1.1\r\n")
    closed_after = None
    t0 = time.monotonic()
    for i in range(20):  # up to 6 s of trickling
        time.sleep(0.3)
        try:
            s.sendall(b"x-pad-%d: 1\r\n" % i)
            s.setblocking(False)
            if s.recv(1) == b"":
                closed_after = time.monotonic() - t0
                break
        except BlockingIOError:
            pass
        except OSError:
            closed_after = time.monotonic() - t0
            break
        finally:
            s.setblocking(True)
    s.close()
    assert closed_after is not None and closed_after < 3.0


def test_one_huge_wrong_typed_body_is_refused_at_once(start_router, data):
    """Before: a 4 MB body of wrong-typed items took 5.6-6.7 s to refuse (every error collected) while every
    other client waited, and the router grew to 1.6 GB. Catches a body limit that ignores max_batch_size x
    the sample size (the 4 MB body would be read and parsed) and validation that collects every error (the
    in-limit body's answer would list thousands)."""
    router = start_router("cheap")
    huge = b'{"inputs": [' + b",".join([b'["x"' + b',"x"' * 39 + b"]"] * 25_000) + b"]}"
    assert len(huge) > 4_000_000
    t0 = time.perf_counter()
    r = requests.post(f"{router.url}/v1/infer", data=huge, headers={"x-api-key": "k-attacker",
                                                                   "content-type": "application/json"}, timeout=30)
    huge_s = time.perf_counter() - t0
    assert r.status_code == 413 and r.json()["error"] == "payload_too_large" and huge_s < 2.0, (r.text, huge_s)
    inside = b'{"inputs": [' + b",".join([b'["x"' + b',"x"' * 39 + b"]"] * 256) + b"]}"
    r = requests.post(f"{router.url}/v1/infer", data=inside, headers={"x-api-key": "k-attacker",
                                                                     "content-type": "application/json"}, timeout=30)
    assert r.status_code == 422 and r.json()["detail"].startswith("inputs.0.0:")
    assert infer(router, data.x["test"][:256]).status_code == 200  # a full batch still fits the limit


def test_malformed_headers_get_a_4xx_json_never_a_500(start_router, data):
    """Before: a 4,300-digit batch in x-psml-shape answered 500 'internal error: ValueError' (and booked a
    service error); client header text was echoed whole into detail (~30 KB a request). Catches int() on an
    unbounded digit string, details that quote a header whole, and unbounded header bytes."""
    router = start_router("headers", max_batch_size=64)
    x = data.x["test"][:2].astype("<f4")
    base = {"x-api-key": "k-attacker", "content-type": "application/octet-stream"}
    cases = [("x-psml-shape", "9" * 4300 + ",40"), ("x-psml-shape", "2," + "4" * 5000),
             ("x-psml-min-accuracy", "a" * 30_000), ("x-psml-dtype", "f" * 30_000)]
    for name, value in cases:
        r = requests.post(f"{router.url}/v1/infer", data=x.tobytes(), timeout=10,
                          headers=base | {"x-psml-shape": "2,40"} | {name: value})
        assert r.status_code == 422 and r.headers["content-type"] == "application/json", (name, r.status_code)
        assert len(r.json()["detail"]) <= 300
    records = list(read_audit_log(router.audit_path))
    assert [r["outcome"] for r in records] == ["invalid"] * len(cases)
    assert max(len(r["detail"]) for r in records) <= 300
    port = int(router.url.rsplit(":", 1)[1])
    head = (b"POST /v1/infer HTTP/1.1\r\nhost: x\r\nx-api-key: k-attacker\r\ncontent-type: application/json\r\n"
            b"content-length: " + b"9" * 5000 + b"\r\n\r\n")
    answer = _response(_raw(port, head))
    assert answer[9:10] == b"4", answer[:60]  # refused as a client error (the parser's 400, or 413)
    big = _response(_raw(port, b"GET /v1/zoo HTTP/1.1\r\nhost: x\r\n" + b"x-junk: " + b"j" * 100_000 + b"\r\n\r\n"))
    assert big.startswith(b"HTTP/1.1 431") and b"headers_too_large" in big
    assert infer(router, data.x["test"][:2]).status_code == 200  # still serving


def test_metrics_are_no_oracle_for_clients(start_router, manifest, data):
    """Before: /metrics on the client's listener told, per request, whether the serving model met the
    client's original min_accuracy (40 of 40 right, 8 diversions, under metric noise) and named every
    client. The same oracle still works on the operator's listener here (so the attack is real); on the
    client's listener it gets 404. Catches /metrics left on the request listener."""
    noise = [{"name": "metric_noise", "distribution": "laplace", "accuracy_scale": 0.05, "latency_scale_ms": 0.5}]
    port = free_port()
    router = start_router("oracle", defenses=noise, metrics_port=port, seed=3)
    front = sorted(ZooView.from_manifest(manifest).pareto, key=lambda m: m.accuracy)
    ask = front[-1].accuracy  # the top model's accuracy: noise diverts some requests below it
    client = RouterClient(router.url, "k-attacker")
    with pytest.raises(MetricsUnavailable):
        diverted(client, f"{router.url}/metrics", "attacker", data.x["test"][:1], ask, None)
    before = len(list(read_audit_log(router.audit_path)))
    guesses = [diverted(client, f"http://127.0.0.1:{port}/metrics", "attacker", data.x["test"][:1], ask, None)
               for _ in range(40)]
    truth = [r["outcome"] != "served" or r["model_accuracy"] < ask
             for r in list(read_audit_log(router.audit_path))[before:]]
    client.close()
    assert guesses == truth and any(truth)  # the operator's page is an exact per-request oracle


def test_padding_holds_for_large_batches(start_router, manifest, data):
    """Before: padding to the slowest model held at batch 1 (9.4 ms for every model) but batch-256 answers
    were unpadded, medians 12 / 33 / 120 ms per model. Catches a floor fixed at one batch size: the router
    with a fixed floor (per_sample_ms 0, no learning) shows the gap, the default one closes it. The first 8
    answers are the floor's learning (a first batch of 256 only has the profile's extrapolation)."""
    x = data.x["test"][:256]

    def medians(router):
        t = {}
        ids = {}
        for _ in range(8):
            assert infer(router, x, min_accuracy=0.0).status_code == 200
        skip = {r["request_id"] for r in read_audit_log(router.audit_path)}
        for _ in range(24):
            t0 = time.perf_counter()
            r = infer(router, x, min_accuracy=0.0)
            assert r.status_code == 200
            ids[r.json()["request_id"]] = (time.perf_counter() - t0) * 1e3
        for rec in read_audit_log(router.audit_path):
            if rec["request_id"] not in skip:
                t.setdefault(rec["model"], []).append(ids[rec["request_id"]])
        return {m: float(np.median(v)) for m, v in t.items()}

    fixed = medians(start_router("fixed", defenses=[{"name": "latency_padding", "floor": "slowest_front",
                                                     "per_sample_ms": 0.0, "learn_quantile": None}]))
    grown = medians(start_router("grown", defenses=[{"name": "latency_padding", "floor": "slowest_front"}]))
    assert len(fixed) >= 2 and len(grown) >= 2
    spread = lambda m: max(m.values()) / min(m.values())  # noqa: E731
    assert spread(fixed) > 1.5, fixed  # the leak: models told apart at batch 256
    assert spread(grown) < 1.15, grown


def test_a_full_disk_answers_503_json_and_charges_nothing(start_router, tmp_path, data):
    """Before: a full disk turned every request into a plain-text 500 after inference ran and the budget was
    charged. The log path is a symlink re-pointed at /dev/full (every write: ENOSPC) and back. Catches an
    audit failure answered as anything but a JSON 503, a budget charged for the unrecorded request (the
    third request below would be refused), and a router that does not recover once the disk has room."""
    real, link = tmp_path / "audit.real.jsonl", tmp_path / "audit.jsonl"
    real.touch()
    link.symlink_to(real)
    router = start_router("disk", audit_log=str(link),
                          defenses=[{"name": "query_budget", "max_samples": 10}])
    x = data.x["test"][:4]
    assert infer(router, x).status_code == 200  # 4 of 10 samples spent
    link.unlink()
    link.symlink_to("/dev/full")
    full = infer(router, x)
    assert full.status_code == 503 and full.json()["error"] == "audit_unavailable" and "retry-after" in full.headers
    link.unlink()
    link.symlink_to(real)
    assert infer(router, x).status_code == 200  # 8 of 10: the unrecorded request was not charged
    assert infer(router, x).status_code == 403  # 12 > 10
    assert [r["status"] for r in read_audit_log(real)] == [200, 200, 403]


def test_rotated_deleted_and_hup_logs_are_followed(start_router, tmp_path, data):
    """Before: a rotated or deleted log kept being written to the old inode (records lost), and SIGHUP (what
    logrotate sends) killed the router. Catches a log written through a descriptor opened once."""
    path = tmp_path / "audit.jsonl"
    router = start_router("rotate", audit_log=str(path))
    x = data.x["test"][:1]
    assert infer(router, x).status_code == 200
    path.rename(tmp_path / "audit.jsonl.1")
    assert infer(router, x).status_code == 200
    assert len(list(read_audit_log(path))) == 1 and len(list(read_audit_log(tmp_path / "audit.jsonl.1"))) == 1
    path.unlink()
    assert infer(router, x).status_code == 200
    assert len(list(read_audit_log(path))) == 1
    os.kill(router.process.pid, 1)  # SIGHUP
    time.sleep(0.3)
    assert router.process.poll() is None and infer(router, x).status_code == 200
    assert len(list(read_audit_log(path))) == 2


def test_short_writes_are_completed_and_torn_lines_counted(tmp_path, monkeypatch):
    """Catches a single os.write per record (a short write leaves a torn line and the next record glued to
    it) and a reader that stops at, or crashes on, a torn line in the middle."""
    import router.audit_log as audit_log

    log = audit_log.AuditLog(tmp_path / "a.jsonl")
    real_write = os.write
    monkeypatch.setattr(audit_log.os, "write", lambda fd, data: real_write(fd, bytes(data[: max(1, len(data) // 3)])))
    for i in range(3):
        log.write({"request_id": f"r{i}", "status": 200})
    monkeypatch.undo()
    log.close()
    assert [r["request_id"] for r in read_audit_log(tmp_path / "a.jsonl")] == ["r0", "r1", "r2"]
    (tmp_path / "b.jsonl").write_bytes(b'{"a": 1}\n{"a": 2, "b"\n{"a": 3}\n{"a": 4')
    torn: list[int] = []
    assert [r["a"] for r in read_audit_log(tmp_path / "b.jsonl", torn)] == [1, 3] and torn == [2, 4]


def _pipelined(port: int, raw: bytes, expect: int) -> list[bytes]:
    """Send ``raw`` (several requests) in one write; the status lines of up to ``expect`` answers."""
    s = _raw(port, raw)
    s.settimeout(5)
    got = b""
    while got.count(b"HTTP/1.1 ") < expect:
        try:
            chunk = s.recv(1 << 20)
        except socket.timeout:
            break
        if not chunk:
            break
        got += chunk
    s.close()
    return re.findall(rb"HTTP/1\.1 \d{3}", got)  # a status line follows the previous body without a line break


def test_review_findings_control_paths_pipelined_headers_and_worker_seed(start_router, data):
    """Found by an independent review of the first fixes, each closed here. Catches: '/metrics%0A' reaching
    the metrics page (uvicorn decodes %0A into the path and Starlette's '^/metrics$' matches before a trailing
    newline: 200 with every client's counters); the 64 KiB header bound counted across pipelined requests
    (300 small pipelined requests got 431 after one answer); the worker seed in the command line (readable by
    every local user in /proc/<pid>/cmdline)."""
    router = start_router("paths", workers=2, seed=None)
    port = int(router.url.rsplit(":", 1)[1])
    assert infer(router, data.x["test"][:1]).status_code == 200
    for path in (b"/metrics%0A", b"/metrics%0D", b"/metrics%00", b"/v1/infer%0A"):
        answer = _response(_raw(port, b"GET " + path + b" HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"))
        assert answer.startswith(b"HTTP/1.1 400") and b"psml_requests" not in answer and b"benign" not in answer
    one = b"GET /v1/zoo HTTP/1.1\r\nhost: x\r\nx-pad: " + b"p" * 250 + b"\r\n\r\n"
    statuses = _pipelined(port, one * 300, 300)
    assert statuses == [b"HTTP/1.1 200"] * 300
    seed = str(next(read_audit_log(router.audit_path))["seed"]).encode()
    workers = [p for p in os.listdir("/proc") if p.isdigit() and b"--worker-fd" in _cmdline(p)]
    assert len(workers) >= 2 and not any(seed in _cmdline(p) for p in workers)


def _cmdline(pid: str) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except OSError:
        return b""


def test_a_key_pays_for_what_it_makes_the_router_parse(start_router, data):
    """Found by the review: 110,000 empty rows ('[[],[],...]', 330 KB) took 35 ms each to refuse, one key on 8
    connections raised benign p50 from 6 to 1,045 ms, and no rate limit or block ever charged it (the body was
    parsed before any client defense). Catches: no cheap count of lists before pydantic (the body would be
    parsed: 422 naming a row, not the list count), invalid bodies free of the key's rate (the fourth request
    below would be parsed again, not refused 429 unread), and per-key body reads without a bound (the stalled
    bodies of one key would all be held)."""
    router = start_router("pay", defenses=[{"name": "query_budget", "samples_per_s": 10.0, "burst_samples": 256}],
                          max_in_flight_per_client=4)
    empty_rows = b'{"inputs": [' + b",".join([b"[]"] * 110_000)[: 300_000].rstrip(b",[") + b"]]}"
    head = {"x-api-key": "k-attacker", "content-type": "application/json"}
    r = requests.post(f"{router.url}/v1/infer", data=empty_rows, headers=head, timeout=30)
    assert r.status_code == 422 and "more lists" in r.json()["detail"]
    codes = [requests.post(f"{router.url}/v1/infer", data=empty_rows, headers=head, timeout=30).status_code
             for _ in range(3)]
    assert codes[-1] == 429  # the invalid bodies drained the key's 256-sample bucket
    assert infer(router, data.x["test"][:4]).status_code == 200  # another key is untouched
    port = int(router.url.rsplit(":", 1)[1])
    stall = STALL.replace(b"k-attacker", b"k-benign")
    held = [_raw(port, stall) for _ in range(4)]
    time.sleep(0.3)
    over = _response(_raw(port, stall))  # a fifth body of the same key: refused at once, not buffered
    assert over.startswith(b"HTTP/1.1 429") and b"request bodies" in over
    for s in held:
        s.close()


def test_connections_are_bounded_per_address(start_router, data):
    """Found by the review: without a bound, idle connections took every file descriptor (140 against a limit
    of 128) and then every client got no answer at all. Catches a router with no connection bound (the 13th
    connection below would be accepted and held)."""
    router = start_router("conns", max_connections_per_ip=12)
    port = int(router.url.rsplit(":", 1)[1])
    idle = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(12)]
    time.sleep(0.2)
    extra = _response(_raw(port, b""))
    assert extra.startswith(b"HTTP/1.1 503") and b"too_many_connections" in extra
    for s in idle:
        s.close()
    time.sleep(0.3)
    assert infer(router, data.x["test"][:1]).status_code == 200


def test_an_answer_withheld_after_inference_is_padded_too(start_router, data):
    """Padding holds errors after selection too: PRADA's flagging request ran on a model and is refused 403
    after inference; its time must not tell the model either. Catches padding applied to 200s only (the 403
    would leave as soon as PRADA raised, well under the floor)."""
    router = start_router("withheld", defenses=[{"name": "prada", "action": "block", "min_distances": 20,
                                                 "test_every": 1},
                                                {"name": "latency_padding", "floor_ms": 80.0, "per_sample_ms": 0.0,
                                                 "learn_quantile": None}])
    x = data.x["test"][:1]
    codes = [infer(router, x, key="k-attacker").status_code for _ in range(25)]  # the same sample: W = 0
    assert 403 in codes
    records = [r for r in read_audit_log(router.audit_path) if r["client"] == "attacker"]
    flagging = next(r for r in records if r.get("detected"))
    assert flagging["status"] == 403 and flagging["model"] is not None
    assert flagging["padded_ms"] > 0 and flagging["router_ms"] >= 80.0
    later = [r for r in records if r["status"] == 403 and not r.get("detected")]
    assert later and all(r.get("model") is None for r in later)  # refused before selection: no model, no floor
