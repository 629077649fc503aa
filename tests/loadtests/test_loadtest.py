"""A short headless Locust run against a real router and Triton; its counts must match the audit log."""

import json
import subprocess
import sys

import pytest

from loadtests.config import LoadSettings
from loadtests.summary import check_goals
from common.errors import ConfigError
from router.audit_log import read_audit_log


def test_headless_run_reports_and_matches_the_audit_log(zoo_dir, tmp_path):
    out = tmp_path / "lt"
    r = subprocess.run([sys.executable, "-m", "psml.cli", "loadtest", "--zoo", str(zoo_dir), "--out-dir", str(out),
                        "--benign-users", "3", "--attackers", "1", "--warmup-s", "2", "--attack-s", "6",
                        "--cooldown-s", "2", "--attack-budget", "200"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    for f in ("locust_stats.csv", "locust.html", "summary.json", "router.audit.jsonl"):
        assert (out / f).is_file()
    summary = json.loads((out / "summary.json").read_text())
    audit = list(read_audit_log(out / "router.audit.jsonl"))
    reported, cut, check = summary["latency"], summary["interrupted_at_stop"], summary["count_check"]
    assert check["audit_records"] == len(audit) == summary["audit"]["records"]
    # Every request the router audited is one Locust reported or one it cut off at stop, per client: catches a
    # count read from Locust's once-a-second CSV (it misses the last second) or a lost/duplicated request.
    assert check["unaccounted"] == 0 and check["match"]
    for client in ("benign", "attacker"):
        name = f"{client} /v1/infer"
        audited = sum(a["client"] == client for a in audit)
        assert audited == reported[name]["requests"] + cut.get(name, 0)
        non_200 = sum(a["client"] == client and a["status"] != 200 for a in audit)
        assert reported[name]["failures"] <= non_200 <= reported[name]["failures"] + cut.get(name, 0)
    assert sum(cut.values()) <= 4  # at most one per user, only at the very end
    assert summary["attackers"][0]["answers"] > 0 and 0 <= summary["attackers"][0]["fidelity"] <= 1
    assert summary["audit"]["goodput"]["benign"]["requests"] > 0
    # useful goodput: one scored answer per benign request Locust reported (minus any cut off at stop), right
    # labels only among answered samples; catches benign users that do not score their answers
    useful = summary["benign_useful"]
    assert 0 < useful["samples_sent"] and useful["samples_useful"] <= useful["samples_answered"] <= useful["samples_sent"]
    assert 0.1 < useful["label_accuracy"] <= 1.0
    assert summary["seed"] == 0 and "locust" in summary["software"]
    # exact per-request times: one per request Locust reported (its once-a-second CSV may only lag behind),
    # percentiles not rounded to whole milliseconds (Locust's CSV buckets would give integers), intervals around them
    for name, exact in summary["latency"].items():
        assert exact["requests"] >= summary["locust"][name]["requests"]
        assert exact["failures"] >= summary["locust"][name]["failures"]
        assert exact["ci95"]["p99_ms"][0] <= exact["p99_ms"] <= exact["ci95"]["p99_ms"][1]
    benign = summary["latency"]["benign /v1/infer"]
    assert any(abs(benign[k] - round(benign[k])) > 1e-6 for k in ("p50_ms", "p95_ms", "p99_ms"))
    # per model, from the audit log: every served request belongs to exactly one model's row
    served = sum(a["outcome"] == "served" for a in audit)
    assert sum(row["served"] for row in summary["per_model"]) == served
    assert all(0 <= row["within_profile"] <= 1 for row in summary["per_model"])
    g = summary["audit"]["goodput"]["benign"]
    assert g["good"] <= g["served"] and g["good_profiled"] <= g["served"]


def test_distributed_run_with_local_workers_matches_the_audit_log(zoo_dir, tmp_path):
    r = subprocess.run([sys.executable, "-m", "psml.cli", "loadtest", "--zoo", str(zoo_dir), "--out-dir", str(tmp_path),
                        "--processes", "2", "--benign-users", "4", "--attackers", "0", "--warmup-s", "4",
                        "--attack-s", "0", "--cooldown-s", "0"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    summary = json.loads((tmp_path / "summary.json").read_text())
    audit = list(read_audit_log(tmp_path / "router.audit.jsonl"))
    assert summary["count_check"]["audit_records"] == len(audit) > 0 and summary["count_check"]["unaccounted"] == 0
    assert summary["processes"] == 2
    # both workers' exact times arrive: as many as Locust counted in all
    assert summary["latency"]["benign /v1/infer"]["requests"] == summary["locust"]["benign /v1/infer"]["requests"]
    assert len(list(tmp_path.glob("latencies-*.jsonl"))) == 2


def test_goals_are_checked_line_by_line():
    stats = {"benign /v1/infer": {"p99_ms": 12.0}}
    good = {"benign": {"goodput_share": 0.8}}
    assert check_goals(stats, good, 20.0, 0.7) == ["VALID: benign p99 12.0 ms <= goal 20.0 ms",
                                                    "VALID: benign goodput 0.8 >= goal 0.7"]
    lines = check_goals(stats, good, 10.0, 0.9)
    assert all(l.startswith("INVALID") for l in lines) and len(lines) == 2


def test_missed_goal_exits_nonzero(zoo_dir, tmp_path):
    r = subprocess.run([sys.executable, "-m", "psml.cli", "loadtest", "--zoo", str(zoo_dir), "--out-dir",
                        str(tmp_path), "--benign-users", "2", "--attackers", "0", "--warmup-s", "2", "--attack-s", "0",
                        "--cooldown-s", "0", "--min-goodput", "1.01"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 1 and "INVALID: benign goodput" in r.stdout and "goal was missed" in r.stderr
    assert (tmp_path / "summary.json").is_file()


def test_load_settings_roundtrip_and_validation():
    s = LoadSettings(benign_users=5, think_max_s=0.5, seed=3)
    assert LoadSettings.from_env(s.to_env()) == s
    with pytest.raises(ConfigError, match="think"):
        LoadSettings(think_min_s=1.0, think_max_s=0.5)
    with pytest.raises(ConfigError, match="PSML_BENIGN_USERS"):
        LoadSettings.from_env({"PSML_BENIGN_USERS": "many"})


def test_count_check_accounts_for_requests_cut_off_at_stop():
    from loadtests.run_summary import count_check

    reported = {"benign /v1/infer": {"requests": 10}, "benign /v1/zoo": {"requests": 2}}
    assert count_check(reported, {"benign /v1/infer": 1}, 11) == {
        "locust": 10, "interrupted": 1, "audit_records": 11, "unaccounted": 0, "match": True}
    assert count_check(reported, {}, 11)["unaccounted"] == 1 and not count_check(reported, {}, 11)["match"]


def test_headless_run_on_an_encoder_zoo_uses_v1_embed(encoder_zoo, tmp_path):
    """Locust users on an encoder zoo post to /v1/embed (the zoo's endpoint from /v1/zoo), the counts still
    match the audit log, and the attacker's transcript trains a stolen encoder scored by its probe and its cosine
    to the victim. Catches users that keep posting to /v1/infer (every request a 404), a count check that only
    knows /v1/infer (Locust 0 vs the audit log), and a Knockoff classifier trained on embeddings."""
    out = tmp_path / "lt-enc"
    r = subprocess.run([sys.executable, "-m", "psml.cli", "loadtest", "--zoo", str(encoder_zoo), "--out-dir",
                        str(out), "--benign-users", "2", "--attackers", "1", "--warmup-s", "2", "--attack-s", "8",
                        "--cooldown-s", "2", "--attack-budget", "200"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    summary = json.loads((out / "summary.json").read_text())
    audit = list(read_audit_log(out / "router.audit.jsonl"))
    assert summary["count_check"]["match"] and summary["count_check"]["locust"] > 0
    assert not any(k.endswith("/v1/infer") for k in summary["latency"])
    benign = summary["latency"]["benign /v1/embed"]
    benign_audit = [a for a in audit if a["client"] == "benign"]
    assert benign["requests"] > 0 and not any(a["status"] == 404 for a in audit)  # every request on the right path
    # benign requirements are drawn from the published ranges, so a few find no model (422), as on /v1/infer
    assert sum(a["status"] == 200 for a in benign_audit) > 0.5 * len(benign_audit)
    assert {a["status"] for a in benign_audit} <= {200, 422}
    attacker = summary["attackers"][0]
    assert attacker["answers"] == 200 and attacker["cosine"] > 0.5 and 0 <= attacker["agreement"] <= 1
