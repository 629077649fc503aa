"""``psml attack extract --kind encoder``: direct extraction of the most accurate encoder of an encoder zoo
(attacks/encoder_extraction.py), in the explicit / fingerprinted / naive settings, per budget, loss and seed."""

from __future__ import annotations

from pathlib import Path

from common.stats import seed_summary

METRICS = ("accuracy", "agreement", "cosine")


def extract_encoders_and_score(zoo_dir, manifest, data, triton, router, budgets, seeds, losses, base, pool_name,
                               log=print) -> dict:
    from dataclasses import replace

    from attacks.encoder_extraction import VictimReference, extract_encoder, untrained_baseline
    from attacks.experiment import SETTINGS, front_by_accuracy
    from attacks.query_pools import query_pool
    from stack.clients import DirectTriton, RouterClient

    from attacks.campaigns import ATTACKER_KEY, check_budgets, fingerprint_and_score

    samples = check_budgets(budgets, data, pool_name)
    fp = fingerprint_and_score(router, manifest, data, ["staircase"], 1, 50, 0, 0)
    spec = fp["results"]["staircase"]["spec"]
    victim = front_by_accuracy(manifest)[0]
    reference = VictimReference.of_model(zoo_dir, victim, data)
    log(f"  victim {victim.name}: probe accuracy {reference.accuracy:.3f} (manifest {victim.accuracy:.3f})")
    # the untrained surrogate depends on the seed only: once per seed, not per budget, loss and setting
    baselines = {seed: untrained_baseline(base.surrogate, seed, data, reference) for seed in seeds}
    runs = []
    for budget in budgets:
        for seed in seeds:
            pool = query_pool(pool_name, data, seed)
            for loss in losses:
                s = replace(base, budget=samples[str(budget)], seed=seed, loss=loss)
                for setting in SETTINGS:
                    if setting == "fingerprinted" and spec is None:
                        runs.append({"budget": str(budget), "seed": seed, "loss": loss, "setting": setting,
                                     "failed": True, "reason": "fingerprinting found no specification"})
                        continue
                    if setting == "explicit":
                        sut, req = DirectTriton.for_entry(triton.endpoints.http_url, victim), {}
                    else:
                        sut = RouterClient(router.url, ATTACKER_KEY, endpoint=manifest.zoo.endpoint)
                        req = dict(spec) if setting == "fingerprinted" else {}
                    try:
                        r = extract_encoder(sut, pool, data, reference, s, req, baselines[seed])
                    finally:
                        sut.close()
                    runs.append({"budget": str(budget), "budget_samples": s.budget, "seed": seed, "loss": loss,
                                 "setting": setting, "failed": False} | r)
                    log(f"  {budget:<6} seed {seed} {loss:<8} {setting:<13} probe acc {r['accuracy']:.3f} "
                        f"(untrained {r['untrained_accuracy']:.3f}) agreement {r['agreement']:.3f} "
                        f"cosine {r['cosine']:.3f}")
    return {"victim": victim.name, "victim_probe_accuracy": reference.accuracy, "fingerprint": fp, "runs": runs,
            "summary": summarize(runs), "budget_samples": samples,
            "victim_training_set": int(len(data.y["victim_train"]))}


def summarize(runs: list[dict]) -> list[dict]:
    """Per (budget, loss, setting): mean, standard deviation and 95% interval over seeds; failed runs named."""
    rows = []
    for key in dict.fromkeys((r["budget"], r["loss"], r["setting"]) for r in runs):
        sel = [r for r in runs if (r["budget"], r["loss"], r["setting"]) == key]
        ok = [r for r in sel if not r["failed"]]
        row = {"budget": key[0], "loss": key[1], "setting": key[2], "seeds": len(ok),
               "failed_seeds": [r["seed"] for r in sel if r["failed"]]}
        for m in METRICS + ("accuracy_ratio", "queries_over_training_set", "untrained_accuracy", "untrained_cosine"):
            values = [r[m] for r in ok if r.get(m) is not None]
            mean, sd, ci = seed_summary(values)
            row |= {m: mean, f"{m}_std": sd, f"{m}_ci95": list(ci) if ci else None}
        rows.append(row)
    return rows


def below_untrained(summary: list[dict]) -> list[str]:
    """A stolen encoder whose probe is worse than its own initial weights' learned something harmful (e.g. naive
    answers mixing several encoders' embedding spaces): flagged, not averaged away."""
    return [f"FLAG {r['budget']} {r['loss']} {r['setting']}: stolen probe {r['accuracy']:.3f} below the untrained "
            f"surrogate's {r['untrained_accuracy']:.3f}" for r in summary
            if r["accuracy"] is not None and r["untrained_accuracy"] is not None
            and r["accuracy"] < r["untrained_accuracy"]]


COLUMNS = [("budget", "budget"), ("loss", "loss"), ("setting", "setting"), ("seeds", "seeds"),
           ("accuracy", "probe acc"), ("accuracy_std", "+/-"), ("accuracy_ratio", "of victim"),
           ("untrained_accuracy", "untrained acc"),
           ("agreement", "agreement"), ("cosine", "cosine"), ("queries_over_training_set", "queries/train set"),
           ("failed_seeds", "failed seeds")]


def extract(a) -> None:
    import tempfile

    from attacks.encoder_extraction import EncoderExtractionSettings
    from common.errors import ConfigError
    from common.tables import format_table
    from stack.loopback import router_for, triton_for

    from attacks.campaigns import check_budgets

    from .cli_shared import load_zoo, router_overrides, write_result_file

    manifest, data = load_zoo(a.zoo)
    if manifest.zoo.kind != "encoder":
        raise ConfigError(f"zoo {a.zoo} holds {manifest.zoo.kind}s; --kind encoder needs an encoder zoo "
                          f"(psml zoo build --kind encoder)")
    base = EncoderExtractionSettings(surrogate=a.surrogate, epochs=a.epochs, batch_size=a.batch_size)
    for loss in a.losses:  # every loss checked before anything starts
        EncoderExtractionSettings(loss=loss)
    check_budgets(a.budgets, data, a.pool)
    with tempfile.TemporaryDirectory(prefix="psml-attack-") as tmp, triton_for(a.zoo, tmp) as triton, \
            router_for(a.zoo, tmp, triton, **router_overrides(a.settings)) as router:
        out = extract_encoders_and_score(Path(a.zoo), manifest, data, triton, router, a.budgets, a.seeds, a.losses,
                                         base, a.pool)
    print(f"\nencoder extraction of {out['victim']} (most accurate encoder; victim probe accuracy "
          f"{out['victim_probe_accuracy']:.3f}, trained on {out['victim_training_set']} samples), surrogate "
          f"{a.surrogate}:\n")
    print(format_table(out["summary"], COLUMNS))
    for line in below_untrained(out["summary"]):
        print(line)
    write_result_file(a.out, "encoder_extraction", vars(a), out | {"extraction": base.as_dict(),
                                                        "router": router_overrides(a.settings)})
