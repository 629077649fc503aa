"""benchmarks.state_store_locust end to end on the test zoo: one valkey store, Triton, two routers x two workers,
a short Locust run in which every key alternates between the routers.

Catches per-router or per-worker state (each router would serve the attacker its own budget: twice the budget
served; each router's PRADA would see only its share of the synthetic stream and raise its own flag, after
fewer samples than the key sent in all), a budget check that is not one
atomic step with its charge (racing requests of the attacker's two users would overshoot the budget), and a
batch refused for the budget that a worker then remembers as a spent budget (30 does not divide 200: the first
refusal leaves samples that the attacker's halved batches must still get; such a worker would refuse them
unread, and fewer than 200 would be served although a batch of 1 was refused)."""

import json

import pytest

from benchmarks import state_store_locust


@pytest.mark.timeout(300)
def test_the_budget_holds_exactly_and_the_flag_crosses_routers_under_locust(zoo_dir, tmp_path, capsys):
    assert state_store_locust.main(["--zoo", str(zoo_dir), "--duration-s", "0"]) == 2  # before any server starts
    assert capsys.readouterr().err.count("\n") == 1
    out = tmp_path / "storeload.json"
    rc = state_store_locust.main(["--zoo", str(zoo_dir), "--duration-s", "8", "--budget-samples", "200",
                                  "--attack-batch", "30", "--benign-keys", "2", "--out", str(out),
                                  "--run-dir", str(tmp_path / "logs" / "run")])  # a folder not there yet: made
    r = json.loads(out.read_text())
    budget, flag = r["budget"], r["flag"]
    assert rc == 0, r["verdicts"]
    assert budget["asked_more"] and budget["served_samples"] == 200  # exactly the budget, over both routers
    assert all(s > 0 for s in budget["served_per_router"].values())  # the key really was served by both
    assert all(n > 0 for n in budget["budget_refusals_per_router"].values())
    assert flag["flagged"] and flag["crossed"] and flag["holds"] and flag["detections"] == 1
    assert flag["detector_samples"] == flag["samples_at_flag_all_routers"]  # one detector over both routers
    other = next(n for n in flag["after_flag"] if n != flag["flagged_by"])
    assert flag["after_flag"][other]["blocked"] >= 1 and flag["after_flag"][other]["served"] == 0
    assert r["benign"]["keys"] == 2 and r["seed"] == 0 and r["software"] and r["settings"]["workers"] == 2
    assert (tmp_path / "logs" / "run" / "triton.log").exists()  # the logs kept where asked



@pytest.mark.timeout(300)
def test_under_log_the_budget_holds_exactly_with_leases_and_held_slots(zoo_dir, tmp_path):
    """The same run with PRADA log, so that budget leases and held slots admit most requests with no round trip
    (docs/router.md): the attacker must still get exactly its budget over two routers x two workers, and the
    synthetic key be flagged once, counting its samples over both routers. Catches a lease or a held slot that
    lets a sample through uncharged, or charges one twice, under real concurrent load."""
    out = tmp_path / "storeload-log.json"
    rc = state_store_locust.main(["--zoo", str(zoo_dir), "--duration-s", "8", "--budget-samples", "200",
                                  "--attack-batch", "30", "--benign-keys", "2", "--prada-action", "log",
                                  "--out", str(out)])
    r = json.loads(out.read_text())
    assert rc == 0, r["verdicts"]
    assert r["budget"]["asked_more"] and r["budget"]["served_samples"] == 200
    assert all(s > 0 for s in r["budget"]["served_per_router"].values())
    assert r["flag"]["flagged"] and r["flag"]["detections"] == 1
    assert r["flag"]["detector_samples"] == r["flag"]["samples_at_flag_all_routers"]
    assert r["settings"]["prada_action"] == "log"
