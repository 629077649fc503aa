"""``psml report``: the claim lines' logic, and the whole quick report on the test zoo through a real stack."""

import json
from dataclasses import replace

import pytest

from psml import report as rep
from psml.report import claims as lines


def runs(pairs, failed=()):
    """by[setting][seed] rows from {setting: [accuracy per seed]}."""
    return {setting: {seed: {"accuracy": a, "fidelity": a, "failed": (setting, seed) in failed}
                      for seed, a in enumerate(accs)} for setting, accs in pairs.items()}


def test_gain_needs_an_interval_that_excludes_zero():
    """Catches a gain judged by its mean alone (+0.5 points on average, but one seed of three loses: not VALID),
    an inconclusive gain printed INVALID (the interval straddles 0: UNDETERMINED), and a loss not INVALID."""
    clear = lines._gain(runs({"fingerprinted": [0.95, 0.94, 0.96], "naive": [0.85, 0.86, 0.85]}), "t")
    noisy = lines._gain(runs({"fingerprinted": [0.95, 0.90, 0.96], "naive": [0.94, 0.91, 0.945]}), "t")
    loss = lines._gain(runs({"fingerprinted": [0.80, 0.81, 0.79], "naive": [0.85, 0.86, 0.85]}), "t")
    assert (clear["verdict"], noisy["verdict"], loss["verdict"]) == ("VALID", "UNDETERMINED", "INVALID")
    assert "fidelity" in lines._gain(runs({"fingerprinted": [0.9, 0.9], "naive": [0.8, 0.8]}), "t", "fidelity")["claim"]


def test_defense_claim_is_judged_on_the_middle_victim_with_the_top_beside_it():
    """Catches the claim read from the top victim alone (the old report's setting, which the paper did not
    claim) and a verdict recomputed from point means instead of the benchmark's interval verdict."""
    def row(victim, verdict, d_acc):
        return {"config": lines.DEFENSE_CONFIG, "victim": victim, "accuracy": 0.5, "d_accuracy": d_acc,
                "d_accuracy_ci95": [d_acc - 0.01, d_acc + 0.01], "d_fidelity": d_acc, "d_fidelity_ci95": None,
                "goodput": 0.9, "useful_goodput": 0.7, "strongest_attacker": "box_centre", "paired_seeds": 3,
                "paper_verdict": verdict}
    d = {"rows": [row("mid", "UNDETERMINED", -0.2), row("top", "INVALID", 0.0)],
         "victims_by_role": {"middle": "mid", "top": "top"}}
    middle, top = lines._defense(d)
    assert "victim mid" in middle["claim"] and "paper setting" in middle["claim"] and middle["verdict"] == "UNDETERMINED"
    assert "victim top" in top["claim"] and top["verdict"] == "INVALID" and "(no interval)" in middle["measured"]


def test_failed_seeds_are_left_out_and_named_never_averaged():
    """The digits zoo's naive seed 2 at 0.089 would turn a clear gain into a huge one if it were averaged in."""
    by = runs({"fingerprinted": [0.95, 0.94, 0.96, 0.95], "naive": [0.85, 0.86, 0.089, 0.84]}, failed={("naive", 2)})
    line = lines._gain(by, "t")
    assert "over 3 seeds" in line["measured"] and "naive seed 2" in line["measured"]
    assert line["verdict"] == "VALID"


def test_a_failed_fingerprint_leaves_the_within_claim_undetermined():
    """Catches 'fingerprinted' silently scored as another setting when it has no surrogate."""
    by = runs({"fingerprinted": [None, None], "explicit": [0.9, 0.9]}, failed={("fingerprinted", 0), ("fingerprinted", 1)})
    assert lines._within(by, "t")["verdict"] == "UNDETERMINED"
    assert lines._within(runs({"fingerprinted": [0.90, 0.91], "explicit": [0.90, 0.90]}), "t")["verdict"] == "VALID"
    assert lines._within(runs({"fingerprinted": [0.85, 0.86], "explicit": [0.90, 0.90]}), "t")["verdict"] == "INVALID"


@pytest.mark.timeout(900)  # end to end through real servers: minutes, not a hang
def test_quick_report_end_to_end_then_cached_then_interrupted(zoo_dir, tmp_path, monkeypatch):
    """The whole quick report on the test zoo (real Triton and routers): every claim has a verdict, the files
    exist, a rerun reuses every step and gives the same figures, and a run that fails part-way leaves no report.
    Catches a report assembled before its steps finished, a cache that is never used (or used across a settings
    change), and a fingerprinted setting that is not the explicit one on a zoo where the staircase works."""
    out = tmp_path / "report"
    s = replace(rep.QUICK, seeds=(0, 1))
    rep.run_report(zoo_dir, out, s, log=lambda *_: None)
    doc = json.loads((out / "report.json").read_text())
    assert doc["complete"] and set(doc["steps"]) == {"zoo", "fingerprint", "extraction", "defense"}
    verdicts = {c["claim"]: c["verdict"] for c in doc["claims"]}
    # zoo, staircase, per budget x outputs (2): within, accuracy gain, fidelity gain; defense: middle and top victim
    assert all(v in ("VALID", "INVALID", "UNDETERMINED") for v in verdicts.values()) and len(verdicts) == 10
    within = [c for c in doc["claims"] if c["claim"].startswith("fingerprinted extraction within 1%")]
    assert within and all(c["verdict"] == "VALID" for c in within)  # the staircase reaches the victim: same answers
    ranks = doc["steps"]["fingerprint"]["ranks"]
    assert len(ranks) == len(doc["steps"]["zoo"]["front"]) and all(r["staircase"]["consistency"] >= 0.95 for r in ranks)
    md = (out / "report.md").read_text()
    assert "## Claims" in md and "## Extraction" in md and "## Defense" in md
    for png in ("fingerprint_queries.png", "extraction.png", "defense_tradeoff.png"):
        assert (out / png).stat().st_size > 0 and f"({png})" in md

    rep.run_report(zoo_dir, out, s, log=lambda *_: None)
    again = json.loads((out / "report.json").read_text())
    assert sorted(again["cached"]) == sorted(doc["steps"]) and again["steps"] == doc["steps"]

    def broken(*_):
        def run(folder):
            (folder / "half.png").write_bytes(b"x")
            raise RuntimeError("killed part-way")
        return run

    monkeypatch.setattr(rep, "fingerprint_step", broken)
    fresh_out = tmp_path / "interrupted"
    with pytest.raises(RuntimeError):
        rep.run_report(zoo_dir, fresh_out, s, log=lambda *_: None)
    assert not (fresh_out / "report.md").exists() and not (fresh_out / "report.json").exists()
    cached = [p.name for p in (fresh_out / ".cache").iterdir()]
    assert any(n.startswith("zoo-") for n in cached) and not any("fingerprint" in n for n in cached)


def test_bad_input_exits_2_before_any_work(zoo_dir, tmp_path):
    from psml.cli import main

    (tmp_path / "file").write_text("x")
    for argv in (["--zoo", str(tmp_path / "nowhere")], ["--zoo", str(zoo_dir), "--out", str(tmp_path / "file")],
                 ["--zoo", str(zoo_dir), "--budgets", "999999", "--out", str(tmp_path / "o")],
                 ["--zoo", str(zoo_dir), "--seeds", "1", "1", "--out", str(tmp_path / "o")]):
        with pytest.raises(SystemExit) as e:
            main(["report", *argv])
        assert e.value.code == 2
    assert not (tmp_path / "o").exists()


def test_quick_report_on_an_encoder_zoo(encoder_zoo, tmp_path):
    """The report on an encoder zoo (real Triton and routers, /v1/embed): its own extraction and defense steps,
    the encoder seed's claims with verdicts, and defense figures that move the right way. Catches a report that
    runs Knockoff on encoders, claims computed from the wrong steps, a defense step whose noise never reaches the
    clients (embedding noise 0.5 must cost the all-class benign client accuracy), and a B4B whose per-key noise is
    not recorded, and benign clients served by another encoder than the attacker (their accuracy would then
    compare two models, not one model with and without a defense)."""
    out = tmp_path / "encoder-report"
    rep.run_report(encoder_zoo, out, replace(rep.QUICK, seeds=(0, 1)), log=lambda *_: None)
    doc = json.loads((out / "report.json").read_text())
    assert doc["complete"] and set(doc["steps"]) == {"zoo", "fingerprint", "encoder_extraction", "encoder_defense"}
    claims = {c["claim"]: c for c in doc["claims"]}
    assert all(c["verdict"] in ("VALID", "INVALID", "UNDETERMINED") for c in claims.values())
    ratio = next(c for k, c in claims.items() if k.startswith("direct extraction reaches"))
    assert ratio["verdict"] != "UNDETERMINED"  # the small budget (250 of 2,000) is under 1/5
    assert any(k.startswith("direct extraction's best loss") for k in claims)
    assert any(k.startswith("noise on returned embeddings") for k in claims)
    assert any(k.startswith("B4B (b4b 8 bits)") for k in claims)
    within = [c for k, c in claims.items() if k.startswith("fingerprinted encoder extraction within 1%")]
    assert len(within) == 2 and all(c["verdict"] == "VALID" for c in within)  # staircase reaches the victim
    step = doc["steps"]["encoder_defense"]
    for config, served in step["served_by"].items():  # benign clients and attacker use the same encoder
        assert set(served) == {"narrow", "broad", "attacker"} and all(
            list(by_model) == [step["victim"]] for by_model in served.values()), (config, served)
    rows = {r["config"]: r for r in step["rows"]}
    assert rows["none"]["d_broad"] == 0 and rows["embedding_noise 0.5"]["d_broad"] < 0
    assert rows["b4b 8 bits"]["attacker_b4b_sigma"] > 0 and rows["none"]["attacker_b4b_sigma"] is None
    md = (out / "report.md").read_text()
    assert "## Encoder extraction" in md and "## Encoder defenses" in md and "## Extraction\n" not in md
    for png in ("encoder_extraction.png", "encoder_defenses.png"):
        assert (out / png).stat().st_size > 0 and f"({png})" in md


def runs_af(pairs):
    """by[setting][seed] rows from {setting: [(accuracy, fidelity) per seed]}: the two metrics apart."""
    return {setting: {seed: {"accuracy": a, "fidelity": f, "failed": False} for seed, (a, f) in enumerate(vals)}
            for setting, vals in pairs.items()}


def test_within_one_point_is_judged_on_accuracy_and_fidelity_each_at_its_boundary():
    """Accuracy within, fidelity 1.5 points off: INVALID; exactly 1 point: VALID. Catches a claim that reads one
    metric for both (the older test data set fidelity equal to accuracy, so a swap passed) and a strict '<'."""
    fid_off = runs_af({"fingerprinted": [(0.900, 0.885), (0.910, 0.895)], "explicit": [(0.900, 0.900), (0.910, 0.910)]})
    assert lines._within(fid_off, "t")["verdict"] == "INVALID"
    edge = runs_af({"fingerprinted": [(0.89, 0.91), (0.90, 0.92)], "explicit": [(0.90, 0.90), (0.91, 0.91)]})
    assert lines._within(edge, "t")["verdict"] == "VALID"
    gain_fid = runs_af({"fingerprinted": [(0.8, 0.95), (0.8, 0.96), (0.8, 0.94)],
                        "naive": [(0.8, 0.85), (0.81, 0.86), (0.79, 0.84)]})
    assert lines._gain(gain_fid, "t", "fidelity")["verdict"] == "VALID"
    assert lines._gain(gain_fid, "t")["verdict"] == "UNDETERMINED"  # no accuracy gain: the metrics stay apart


def test_staircase_claim_needs_consistency_and_fewer_queries_at_every_rank():
    """Catches a claim judged on rank 1 only, consistency compared with '>' at 0.95, and the query count ignored."""
    def steps(ranks):
        zoo = {"validation": {"valid": True, "models": [], "front": {"valid": True}}}
        return {"zoo": rep.StepRun("zoo", zoo, None, 0, False), "fingerprint": rep.StepRun("fingerprint", {"ranks": ranks}, None, 0, False),
                "extraction": rep.StepRun("extraction", {"runs": []}, None, 0, False)}

    def rank(k, consistency, queries, grid=625):
        return {"rank": k, "staircase": {"consistency": consistency, "queries": queries},
                "grid_scan": {"queries": grid}}
    verdict = lambda ranks: lines.claims(steps(ranks))[1]["verdict"]
    assert verdict([rank(1, 1.0, 12), rank(2, 0.95, 14)]) == "VALID"
    assert verdict([rank(1, 1.0, 12), rank(2, 0.94, 14)]) == "INVALID"
    assert verdict([rank(1, 1.0, 12), rank(2, 1.0, 700)]) == "INVALID"
