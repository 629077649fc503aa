"""Smoke runs of the load benchmarks on the test zoo: tiny settings, real servers, the result files checked.
They catch a benchmark that no longer runs (an import or a signature changed under it) or that writes a result
without the fields its README table is built from; the figures themselves are not judged here."""

import json

import pytest

from benchmarks import overload, router_vs_direct


@pytest.mark.timeout(600)
def test_router_vs_direct_smoke(zoo_dir, tmp_path):
    out = tmp_path / "rvd.json"
    assert router_vs_direct.main(["--zoo", str(zoo_dir), "--batch-sizes", "1", "--concurrency", "2",
                                  "--workers", "1", "--formats", "json", "binary", "--requests-per-round", "40",
                                  "--rounds", "1", "--out", str(out)]) == 0
    r = json.loads(out.read_text())
    assert {c["system"] for c in r["cells"]} == {"direct", "router json w1", "router binary w1"}
    for row in r["table"]:
        # CPU is read in clock ticks (10 ms): 40 requests may read 0, so only its presence is checked here
        assert row["errors"] == 0 and row["requests"] == 40 and row["tput_ratio"] > 0 and row["cpu_us_router"] >= 0
    assert r["software"] and r["hardware"] and r["settings"]["cores"] >= 1
    # the harness's own overhead beside them: catches a null system measured through the wrong driver or not at all
    over = {c["system"]: c for c in r["overhead"]}
    assert set(over) == {"null system, threads", "null system, asyncio", "router json w1, null backend"}
    assert all(c["errors"] == 0 and c["requests"] == 40 for c in over.values())
    assert over["null system, threads"]["p50_ms"] < over["router json w1, null backend"]["p50_ms"]


@pytest.mark.timeout(600)
def test_overload_smoke(zoo_dir, tmp_path):
    out = tmp_path / "overload.json"
    assert overload.main(["--zoo", str(zoo_dir), "--concurrency", "24", "--duration-s", "1.5", "--max-in-flight", "2",
                          "--out", str(out)]) == 0
    rows = {r["router"]: r for r in json.loads(out.read_text())["rows"]}
    assert set(rows) == {"no admission control", "max_in_flight 2"}
    assert rows["no admission control"]["shed"] == 0 and rows["max_in_flight 2"]["shed"] > 0  # the bound sheds
    assert all(r["errors"] == 0 and r["offered_per_s"] > 0 for r in rows.values())


@pytest.mark.timeout(900)
def test_defense_vs_none_smoke(zoo_dir, monkeypatch):
    """defense_vs_none called as a function (the undefended configuration, one seed, the small budget; the defended ones run the same code): every row with its
    pairing to none. Catches run() no longer runnable without its command line, or the benign client sending
    nothing (goodput None) once its loop moved onto the closed-loop core."""
    from benchmarks import defense_vs_none as dvn

    monkeypatch.setattr(dvn, "CONFIGS", {k: dvn.CONFIGS[k] for k in ("none",)})
    r = dvn.run(dvn.DefenseVsNoneSettings(zoo_dir=zoo_dir, benign_requests=20, budget="small", seeds=(0,)),
                log=lambda *_: None)
    assert [(x["defense"], x["attacker"]) for x in r["rows"]] == [("none", "plain"), ("none", "adaptive")]
    assert all(x["goodput"] is not None and 0 <= x["goodput"] <= 1 and "d_accuracy" in x for x in r["rows"])
    assert r["settings"]["benign_requests"] == 20 and r["victim"]


@pytest.mark.timeout(600)
def test_deployment_costs_smoke(zoo_dir):
    """deployment_costs called as a function, each measured request's time paired with its serving model by the
    request ids on_request collects. Catches run() no longer runnable without its command line, a failed pairing
    (a KeyError, or rows without per-model p50s) and the benign cost not taken against "none"."""
    from benchmarks.deployment_costs import DeploymentCostsSettings, run

    r = run(DeploymentCostsSettings(zoo_dir=zoo_dir, batch_sizes=(1,), requests=12, deadline_iterations=1000),
            log=lambda *_: None)
    assert [row["config"] for row in r["padding"]] == ["none", "padding, floor at batch 1", "padding per batch size"]
    assert all(row["requests"] == 12 and row["p50_by_model_ms"] for row in r["padding"])
    assert r["padding"][0]["benign_cost_p50_ms"] == 0 and r["body_deadline"]["iterations"] == 1000


@pytest.mark.timeout(300)
def test_state_store_cost_smoke(zoo_dir):
    """state_store_cost called as a function on the null backend (no Triton): both routers measured, their
    comparison in the table. Catches run() no longer runnable without its command line, and the result's
    settings losing the names older result files used."""
    from benchmarks.state_store_cost import StateStoreCostSettings, run

    r = run(StateStoreCostSettings(zoo_dir=zoo_dir, concurrencies=(2,), requests_per_round=20, rounds=1),
            log=lambda *_: None)
    assert {c["system"] for c in r["cells"]} == {"in-process", "store"}
    assert all(c["requests"] == 20 and c["errors"] == 0 for c in r["cells"]) and len(r["table"]) == 1
    assert r["settings"]["concurrency"] == [2] and r["settings"]["batch"] == 1 and r["settings"]["cores"] >= 1
