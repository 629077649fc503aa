"""The flag claim on hand-made audit records (pure: no router): what it calls VALID under block and under log."""

from loadtests.shared_state_claims import flag_claim


def _rec(ts, status, n=10, **extra):
    return {"ts": ts, "router_ms": 1.0, "client": "synthetic", "status": status, "batch_size": n,
            "outcome": "served" if status == 200 else "refused", **extra}


def _records(after_status, detected_at=30):
    """Three batches of 10 alternating routers, the third flagged; then one more request at each router."""
    r1 = [_rec(1.0, 200), _rec(3.0, 200, detected=f"prada after {detected_at} samples", prada_flagged=True),
          _rec(5.0, after_status)]
    r2 = [_rec(2.0, 200), _rec(4.0, after_status)]
    return {"r1": r1, "r2": r2}


def test_the_flag_claim_judges_refusals_only_under_block():
    """Under block, a key served by a router after the flag is INVALID (a per-router flag, or none crossing);
    under log it is served on by design and only the count is judged. Either way a detector that counted fewer
    samples than the key sent over both routers (a per-router detector: 20 of 30) is INVALID. Catches a log run
    judged by block's rule (always INVALID) and a claim that ignores the count."""
    assert flag_claim(_records(403), "synthetic")["holds"]
    assert not flag_claim(_records(200), "synthetic")["holds"]
    assert flag_claim(_records(200), "synthetic", refuses=False)["holds"]
    assert not flag_claim(_records(200, detected_at=20), "synthetic", refuses=False)["holds"]
    assert not flag_claim(_records(403, detected_at=20), "synthetic")["holds"]
