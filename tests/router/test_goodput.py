"""Goodput from audit records, checked against hand-computed cases."""


import pytest

from router.audit_log import AuditLog, read_audit_log
from router.goodput import goodput_by_client, is_good, summarize


def rec(client="a", outcome="served", acc=0.9, lat_ms=5.0, req_acc=0.8, req_lat=10.0, ts=0.0, profiled_ms=4.0):
    return {"client": client, "outcome": outcome, "model_accuracy": acc if outcome == "served" else None,
            "model_latency_ms": profiled_ms if outcome == "served" else None, "router_ms": lat_ms, "req_min_accuracy": req_acc, "req_max_latency_ms": req_lat, "ts": ts}


def test_hand_checked_goodput():
    records = [
        rec(ts=0.0),                                   # good
        rec(acc=0.7, ts=1.0),                          # served by a model below the original accuracy: not good
        rec(lat_ms=12.0, ts=2.0),                      # too slow end to end: not good, SLO missed
        rec(outcome="no_model", ts=3.0),               # rejected
        rec(outcome="unavailable", ts=4.0),            # dropped
        rec(req_acc=None, req_lat=None, ts=5.0),       # no requirement: any answer is good
        rec(outcome="invalid", ts=6.0),                # not counted
    ]
    s = summarize(records)
    assert s["requests"] == 6 and s["served"] == 4 and s["good"] == 2
    assert s["goodput_share"] == pytest.approx(2 / 6)
    assert s["slo_attainment"] == pytest.approx(3 / 6)
    assert s["reject_rate"] == pytest.approx(1 / 6) and s["drop_rate"] == pytest.approx(1 / 6)
    assert s["invalid"] == 1
    assert s["span_s"] == pytest.approx(5.005) and s["goodput_rate_per_s"] == pytest.approx(2 / 5.005)


def test_profiled_goodput_trusts_the_profile_and_end_to_end_goodput_the_clock():
    records = [
        rec(lat_ms=12.0, profiled_ms=4.0, ts=0.0),   # profile promised 4 ms, router took 12: good only as profiled
        rec(lat_ms=5.0, profiled_ms=11.0, ts=1.0),   # profile says too slow, this one was fast: good only end to end
        rec(acc=0.7, lat_ms=1.0, ts=2.0),            # below the accuracy asked: good under neither
        rec(ts=3.0),                                 # good under both
    ]
    s = summarize(records)
    assert (s["good"], s["good_profiled"]) == (2, 2)
    assert s["goodput_share"] == s["goodput_share_profiled"] == 0.5
    assert summarize(records[:1])["goodput_share"] == 0 and summarize(records[:1])["goodput_share_profiled"] == 1


def test_router_faults_count_as_drops():
    s = summarize([rec(), rec(outcome="error", ts=1.0)])
    assert s["requests"] == 2 and s["drop_rate"] == 0.5 and s["goodput_share"] == 0.5


def test_per_client_split():
    r = goodput_by_client([rec("a"), rec("b", acc=0.1), rec("b")])
    assert r["overall"]["good"] == 2 and r["a"]["goodput_share"] == 1.0 and r["b"]["goodput_share"] == 0.5


def test_empty_log():
    s = summarize([])
    assert s["requests"] == 0 and s["goodput_share"] is None and s["goodput_rate_per_s"] is None


def test_audit_log_appends_and_skips_a_torn_last_line(tmp_path):
    log = AuditLog(tmp_path / "a.jsonl")
    log.write(rec() | {"status": 200})
    log.write(rec(client="b") | {"status": 200})
    log.close()
    with open(tmp_path / "a.jsonl", "ab") as f:
        f.write(b'{"ts": 1, "client": "torn')  # a crash mid-write
    rows = list(read_audit_log(tmp_path / "a.jsonl"))
    assert [r["client"] for r in rows] == ["a", "b"] and is_good(rows[0])
