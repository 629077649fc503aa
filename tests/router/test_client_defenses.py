"""Per-client defenses as pure state machines: PRADA's detector and the per-key query budget."""

import numpy as np
import pytest

from router.defenses import make_defense
from router.defenses.prada import Blocked
from router.defenses.query_budget import BudgetExhausted, RateLimited
from router.defenses.token_bucket import BatchOverBurst

RNG = np.random.default_rng(0)
PROJ = RNG.normal(size=(40, 10))  # a stand-in classifier: the predicted class of x is argmax(x @ PROJ)


def stream(prada, x, client="c", batch=8):
    infos = []
    for i in range(0, len(x), batch):
        b = x[i : i + batch]
        infos.append(prada.observe(client, b, (b @ PROJ).argmax(1)))
    return infos


def jbda_like(n_seeds=10, steps=100, eps=0.1, seed=1):
    """Jacobian-augmentation-style synthetic queries: each a small signed step from the previous one."""
    rng = np.random.default_rng(seed)
    cur, out = rng.normal(size=(n_seeds, 40)), []
    for _ in range(steps):
        cur = cur + eps * np.sign(rng.normal(size=cur.shape))
        out.append(cur.copy())
    return np.concatenate(out).astype(np.float32)


def test_prada_passes_natural_queries_and_flags_synthetic_ones():
    """Catches a detector that flags everyone (W compared the wrong way) or no one (never tested)."""
    natural = np.random.default_rng(2).normal(size=(1000, 40)).astype(np.float32)
    p = make_defense({"name": "prada", "delta": 0.9})
    stream(p, natural, "benign")
    stream(p, jbda_like(), "attacker")
    report = p.client_report()
    assert report["benign"]["flagged_at_samples"] is None and report["benign"]["w"] > 0.95
    assert report["attacker"]["flagged_at_samples"] is not None and report["attacker"]["w"] < 0.9
    assert report["attacker"]["flagged_at_samples"] <= 200  # soon after min_distances (100)


def test_prada_flags_a_stream_that_repeats_one_probe():
    """The staircase's fixed probe input gives distance 0 again and again: not a natural stream."""
    p = make_defense({"name": "prada", "min_distances": 20})
    probe = np.random.default_rng(3).normal(size=(1, 40)).astype(np.float32)
    infos = stream(p, np.repeat(probe, 40, 0), batch=1)
    assert infos[-1]["prada_flagged"] and infos[-1]["prada_w"] < 0.9


def reference_prada_w(x, labels, delta=0.9, min_distances=100):
    """PRADA's Algorithm 1 written out plainly (lists, np.mean/np.std over DG_c, a test after every sample):
    per sample, (W, flagged) as the router's incremental version must report them with test_every=1."""
    from scipy.stats import shapiro

    groups, dg, thr, dists, out, flagged = {}, {}, {}, [], [], False
    for row, c in zip(x.astype(np.float32), labels):
        if c not in groups:
            groups[c], dg[c], thr[c] = [row], [0.0], 0.0
        else:
            d = float(min(np.linalg.norm(g - row) for g in groups[c]))
            dists.append(d)
            thr[c] = max(thr[c], float(np.mean(dg[c]) - np.std(dg[c])))
            if d > thr[c]:
                groups[c].append(row)
                dg[c].append(d)
        if len(dists) >= min_distances and not flagged:  # a flag is for good: no test after it
            w = float(shapiro(dists).statistic)
            flagged = w < delta
        out.append((w if len(dists) >= min_distances else None, flagged))
    return out


@pytest.mark.parametrize("data", ["natural", "synthetic"])
def test_prada_incremental_statistics_match_the_algorithm_as_written(data):
    """Catches a wrong running std (sample instead of population, a missing square), a threshold updated after
    the comparison, a nearest-member search by dot products that picks the wrong member, and a test schedule
    that skips the first eligible test."""
    x = (np.random.default_rng(4).normal(size=(400, 40)) if data == "natural" else jbda_like(steps=40)).astype(np.float32)
    labels = (x @ PROJ).argmax(1)
    p = make_defense({"name": "prada", "test_every": 1})
    got = [p.observe("c", x[i : i + 1], labels[i : i + 1]) for i in range(len(x))]
    want = reference_prada_w(x, labels)
    for g, (w, flagged) in zip(got, want):
        assert g["prada_flagged"] == flagged
        assert (g["prada_w"] is None) == (w is None) and (w is None or abs(g["prada_w"] - w) < 1e-4)


def test_prada_tests_every_k_distances_and_flags_at_most_k_late():
    """With test_every=k the flag comes at the first scheduled test at or after the per-sample test's flag:
    catches a schedule that never tests again after the first test, or one counting samples, not distances."""
    x = jbda_like(steps=40)
    labels = (x @ PROJ).argmax(1)
    first = {}
    for k in (1, 10):
        p = make_defense({"name": "prada", "test_every": k})
        for i in range(len(x)):
            if p.observe("c", x[i : i + 1], labels[i : i + 1])["prada_flagged"]:
                first[k] = i
                break
    assert 0 <= first[10] - first[1] < 10


def test_prada_block_refuses_the_flagging_request_and_every_later_one():
    p = make_defense({"name": "prada", "action": "block", "min_distances": 20})
    x = jbda_like(steps=10)
    with pytest.raises(Blocked) as e:
        stream(p, x, batch=1)
    assert e.value.status == 403 and e.value.audit["prada_flagged"] and "detected" in e.value.audit
    with pytest.raises(Blocked):
        p.admit("c", 1, 0.0)
    p.admit("other", 1, 0.0)  # per key: another client is untouched


def test_prada_throttle_rate_limits_a_flagged_key_in_samples():
    """Catches a throttle that counts requests (a flagged key would still take 4 samples a request here, and
    a full batch of 256) and one that never refills."""
    p = make_defense({"name": "prada", "action": "throttle", "min_distances": 20, "throttle_samples_per_s": 4.0})
    stream(p, jbda_like(steps=10), batch=1)
    assert p.flagged("c")
    p.admit("c", 4, 100.0)  # the bucket's burst: one second's worth, 4 samples
    with pytest.raises(RateLimited) as e:
        p.admit("c", 1, 100.1)
    assert e.value.status == 429 and e.value.retry_after >= 1
    p.admit("c", 2, 100.6)  # 0.5 s later two samples have come back (4 per second)
    with pytest.raises(BatchOverBurst):  # never satisfiable by waiting: 422, not 429
        p.admit("c", 256, 200.0)


def test_prada_block_withholds_the_answers_of_requests_already_in_flight():
    """Catches a block applied at admission only: a request admitted before the flag rose and answered after it
    (the key's other connections) would leave with its answer."""
    p = make_defense({"name": "prada", "action": "block", "min_distances": 20})
    x = jbda_like(steps=10)
    p.admit("c", 1, 0.0)  # admitted while the key is clean ...
    with pytest.raises(Blocked):
        stream(p, x, batch=1)  # ... another request of the key raises the flag ...
    with pytest.raises(Blocked):
        p.observe("c", x[:1], np.zeros(1, int))  # ... and the first one's answer is withheld too


def test_query_budget_rate_limit_and_total_budget_per_key():
    """Catches a bucket shared by all keys, one that never refills, and a budget counted in requests."""
    q = make_defense({"name": "query_budget", "samples_per_s": 250.0, "burst_samples": 75, "max_samples": 100})
    for _ in range(3):
        q.admit("a", 25, 0.0)
    with pytest.raises(RateLimited) as e:  # a rate in requests would let this one through
        q.admit("a", 1, 0.0)
    assert e.value.retry_after == 1
    q.admit("b", 25, 0.0)  # another key has its own bucket
    q.admit("a", 25, 0.1)  # 25 samples back after 0.1 s at 250/s
    with pytest.raises(BudgetExhausted):
        q.admit("a", 1, 10.0)  # 100 samples spent
    assert q.admit("b", 75, 10.0) is None
    q.refund("b", 75)  # a request never answered (its audit record failed) is not charged
    assert q.admit("b", 75, 10.0) is None


@pytest.mark.parametrize("spec", [
    {"name": "prada", "delta": 1.5}, {"name": "prada", "action": "ban"}, {"name": "prada", "min_distances": 2}, {"name": "prada", "test_every": 0},
    {"name": "query_budget"}, {"name": "query_budget", "samples_per_s": 0}, {"name": "query_budget", "rate_per_s": 5},
    {"name": "prada", "throttle_samples_per_s": 0.5}, {"name": "query_budget", "max_samples": 0},
    {"name": "latency_padding"}, {"name": "latency_padding", "floor_ms": -1},
    {"name": "latency_padding", "buckets_ms": [5, 2]}, {"name": "latency_padding", "floor_ms": 5, "per_sample_ms": -1},
    {"name": "latency_padding", "buckets_ms": [2, 4], "per_sample_ms": 0.1},
    {"name": "latency_padding", "floor_ms": 5, "learn_quantile": 0.2}, {"name": "latency_padding", "floor_ms": 5, "learn_min": 0}, {"name": "latency_padding", "floor": "median"},
])
def test_bad_parameters_are_refused(spec):
    from common.errors import ConfigError

    with pytest.raises(ConfigError, match=spec["name"]):
        make_defense(spec)


def test_latency_padding_floors_and_buckets():
    from router.requirements import ZooModel
    from router.zoo_view import ZooView

    pad = make_defense({"name": "latency_padding", "floor": "slowest_front", "margin_ms": 0.5})
    pad.check_zoo(ZooView((ZooModel("a", 0.6, 1.0, True, 0.1), ZooModel("b", 0.9, 5.0, True, 0.4),
                           ZooModel("c", 0.5, 9.0, False, 2.0)), 40, 10))
    assert pad.hold_until_ms(0.3) == 5.5  # the slowest FRONT model, not the off-front one
    # a batch of 256: 255 samples beyond the profiled batch of 1 at the steepest front slope (0.4 ms/sample);
    # catches a floor fixed at batch 1 (large batches unpadded) and one taken from the off-front model
    assert pad.hold_until_ms(0.3, 256) == pytest.approx(5.5 + 255 * 0.4)
    # the floor learns from answers: 60 batch-256 answers ready at 1.5x the static floor raise that bucket's
    # floor to them and leave batch 1 alone; catches a floor that never follows a slower machine
    static = pad.hold_until_ms(0.3, 256)
    for _ in range(60):
        pad.observe(256, 1.5 * static)
    assert pad.hold_until_ms(0.3, 256) == pytest.approx(1.5 * static) and pad.hold_until_ms(0.3) == 5.5
    assert pad.hold_until_ms(0.3, 200) == pytest.approx(1.5 * pad.static_floor_ms(200))  # same bucket, scaled
    fixed = make_defense({"name": "latency_padding", "floor_ms": 3.0, "per_sample_ms": 0.0})
    fixed.check_zoo(ZooView((ZooModel("a", 0.6, 1.0, True, 0.1),), 40, 10))
    assert fixed.hold_until_ms(0.3, 256) == 3.0
    buckets = make_defense({"name": "latency_padding", "buckets_ms": [2, 4, 8]})
    assert [buckets.hold_until_ms(t) for t in (0.5, 2.0, 3.1, 7.9, 9.0)] == [2, 2, 4, 8, 9.0]


def test_load_test_summary_counts_defense_actions_per_client():
    """Catches counting refusals of every client under one key and flags counted from the wrong sample."""
    from loadtests.summary import defense_actions

    def rec(client, outcome="served", status=200, n=25, **kw):
        return {"client": client, "outcome": outcome, "status": status, "batch_size": n} | kw

    records = [rec("benign", n=3), rec("attacker"), rec("attacker", prada_flagged=True, detected="prada after 50 samples"),
               rec("attacker", "refused", 403, detail="this API key is blocked"),
               rec("greedy", "refused", 429, detail="over this API key's rate"),
               rec("greedy", "refused", 403, detail="this API key has used 100 of its 100 samples; a budget")]
    a = defense_actions(records)
    assert set(a) == {"attacker", "greedy"}
    assert a["attacker"]["flagged_after_samples"] == 25 and a["attacker"]["blocked"] == 1
    assert a["attacker"]["detections"] == ["prada after 50 samples"]
    assert (a["greedy"]["rate_limited"], a["greedy"]["budget_exhausted"], a["greedy"]["blocked"]) == (1, 1, 0)
