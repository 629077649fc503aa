"""Defenses in a real router in front of a real Triton: what a client sees and what the audit log keeps."""

import time

import numpy as np
import pytest
import requests

from attacks.experiment import front_by_accuracy, run_timing
from attacks.timing import TimingSettings
from common.errors import PsmlError
from stack.clients import RouterRejected
from router.audit_log import read_audit_log
from tests.conftest import infer


def top_spec(manifest) -> dict:
    return {"min_accuracy": front_by_accuracy(manifest)[0].accuracy}


def test_output_perturbation_changes_probabilities_never_the_label(start_router, manifest, data):
    """Catches a defense applied to the wrong array (labels from perturbed probabilities, or probabilities left
    untouched) and one that is not applied to every row of a batch."""
    x = data.x["test"][:16]
    plain = infer(start_router("plain"), x, **top_spec(manifest)).json()
    only = infer(start_router("labels", defenses=[{"name": "labels_only"}]), x, **top_spec(manifest)).json()
    rounded = infer(start_router("round", defenses=[{"name": "round_probabilities", "decimals": 1}]), x,
                    **top_spec(manifest)).json()
    p = np.array(only["probabilities"])
    assert p.shape == (16, manifest.models[0].output.shape[1]) and (p.max(1) == 1).all() and (p.sum(1) == 1).all()
    assert only["labels"] == plain["labels"] == rounded["labels"]
    r = np.array(rounded["probabilities"])
    assert np.allclose(r * 10, np.round(r * 10), atol=1e-6) and not np.allclose(r, plain["probabilities"])


def test_prada_blocks_a_repeated_probe_stream_and_not_another_key(start_router, data):
    router = start_router(defenses=[{"name": "prada", "action": "block", "min_distances": 20}])
    probe = data.x["attacker_pool"][:1]
    answers = [infer(router, probe, key="k-attacker") for _ in range(40)]
    statuses = [a.status_code for a in answers]
    first = statuses.index(403)
    assert 20 <= first <= 25 and set(statuses[first:]) == {403}  # flagged once 20 distances are in
    assert answers[first].json()["error"] == "blocked"
    assert infer(router, data.x["test"][:4], key="k-benign").status_code == 200
    records = [r for r in read_audit_log(router.audit_path) if r["client"] == "attacker"]
    assert len(records) == 40 and records[first]["outcome"] == "refused" and "detected" in records[first]
    assert records[first]["prada_w"] < 0.9


def test_query_budget_answers_429_with_retry_after_then_403_when_spent(start_router, data):
    router = start_router(defenses=[{"name": "query_budget", "samples_per_s": 1.5, "burst_samples": 6, "max_samples": 6}])
    x = data.x["test"][:3]
    codes = [infer(router, x).status_code for _ in range(2)]
    limited = infer(router, x[:1])
    assert codes == [200, 200] and limited.status_code == 403 and limited.json()["error"] == "query_budget_exhausted"
    other = start_router("rate", defenses=[{"name": "query_budget", "samples_per_s": 1.5, "burst_samples": 6}])
    codes = [infer(other, x, key="k-attacker").status_code for _ in range(2)]
    r = infer(other, x, key="k-attacker")
    assert codes == [200, 200] and r.status_code == 429 and int(r.headers["retry-after"]) >= 1 and r.json()["error"] == "rate_limited"
    assert infer(other, x, key="k-benign").status_code == 200  # another key has its own bucket


def test_latency_padding_holds_every_answer_until_the_floor(start_router, data):
    router = start_router(defenses=[{"name": "latency_padding", "floor_ms": 30.0}])
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        assert infer(router, data.x["test"][:1]).status_code == 200
        times.append((time.perf_counter() - t0) * 1e3)
    assert min(times) >= 30.0
    records = list(read_audit_log(router.audit_path))
    assert all(r["router_ms"] >= 30.0 and r["padded_ms"] > 0 for r in records)


@pytest.mark.parametrize("defenses, words", [
    ([{"name": "top_k", "k": 99}], "exceeds the zoo's"),
    ([{"name": "reverse_sigmoid", "beta": -1}], "beta must be > 0"),
    ([{"name": "labels_only"}, {"name": "output_noise"}], "labels_only must be the last"),
])
def test_router_refuses_to_start_with_a_bad_defense(start_router, defenses, words):
    with pytest.raises(PsmlError, match=words):
        start_router(defenses=defenses)


def test_timing_side_channel_identifies_models_and_padding_hides_them(start_router, manifest, data):
    """Catches a timing attack that is no better than chance (templates not taken at the corners), and a
    padding defense that does not pad (identification stays high)."""
    s = TimingSettings(template_queries=30, test_queries=40, samples=(1, 10), trials=300)
    probe = data.x["attacker_pool"][:1]
    plain = start_router("plain")
    open_ = run_timing(plain.url, "k-attacker", plain.audit_path, manifest, probe, s)
    assert open_["ranks"] == open_["front"] == len(manifest.pareto_models())
    assert open_["accuracy_by_samples"]["10"] >= 0.9
    padded = start_router("padded", defenses=[{"name": "latency_padding", "floor": "slowest_front", "margin_ms": 3.0}])
    hidden = run_timing(padded.url, "k-attacker", padded.audit_path, manifest, probe, s)
    assert hidden["accuracy_by_samples"]["1"] < 0.8 < open_["accuracy_by_samples"]["1"]


def test_timing_attacker_with_natural_samples_sends_no_repeated_input_and_still_identifies(start_router, manifest, data):
    """The timing attack sending natural pool samples instead of one fixed probe (the variant fielded against
    per-client detection). PRADA (action log, so both run to the end) sees the fixed probe's distances at 0,
    W = 0 at its first test, and the natural stream's distances all above 0; identification still works from the
    natural stream. Catches a natural stream that still repeats the probe and templates broken by the varying
    inputs. (Whether PRADA flags the natural stream depends on the data: on the default zoo it does, after ~180
    samples; the trade-off benchmark reports it.)"""
    s = TimingSettings(template_queries=30, test_queries=40, samples=(1, 10), trials=300)
    router = start_router(defenses=[{"name": "prada", "action": "log", "min_distances": 20}])
    probe, pool = data.x["attacker_pool"][:1], data.x["attacker_pool"][1:]
    run_timing(router.url, "k-attacker", router.audit_path, manifest, probe, s)
    natural = run_timing(router.url, "k-benign", router.audit_path, manifest, probe, s, pool=pool)
    assert natural["accuracy_by_samples"]["10"] >= 0.9 and natural["inputs"] == "natural pool samples"
    records = list(read_audit_log(router.audit_path))
    fixed_w = [r["prada_w"] for r in records if r["client"] == "attacker" and r.get("prada_w") is not None]
    natural_w = [r["prada_w"] for r in records if r["client"] == "benign" and r.get("prada_w") is not None]
    assert fixed_w and fixed_w[0] == 0.0  # a repeated probe: every distance 0, flagged at the first test
    assert natural_w and min(natural_w) > 0.0  # no input repeated
