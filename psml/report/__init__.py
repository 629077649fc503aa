"""``psml report``: the whole PSML reproduction on one stack, in one command, as a report one can cite.

Steps, each cached (see below) and each on its own Triton and router on loopback:
1. zoo: the zoo table and its front, re-measured on this host (``psml zoo validate``): a verdict per model;
2. fingerprint: staircase vs grid scan for every rank on the front, queries and consistency (audit log);
3. extraction: Knockoff in the explicit / fingerprinted / naive settings x budgets x seeds, with probabilities
   and with top-1 labels only; mean, spread and 95% interval over seeds; failed surrogates named, not averaged;
4. defense: the metric-noise defense against the undefended router, each judged against the strongest attacker
   psml fields, with benign goodput, latency and false positives (``benchmarks.defense_tradeoff``).
On an encoder zoo steps 3 and 4 are direct extraction of encoders and the encoder defenses
(psml/report/encoder.py), with the encoder seed's claims.
Then every PSML claim becomes one line with the measured figure, the tolerance and a verdict (VALID, INVALID,
or UNDETERMINED when a figure is missing), in MLPerf LoadGen's style.

Caching: a step's result lives in ``<out>/.cache/<step>-<key>/`` where the key hashes the zoo's manifest, the
step's settings and the code (every .py file of the project). A rerun reuses finished steps; ``--fresh``
ignores them. Each step's folder and the report's files are written to a temporary name and renamed when
complete, so an interrupted run never leaves a report (or a cached step) that looks complete.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

from common.atomic import write_json_atomic, write_text_atomic
from common.versions import hardware, software_versions

from . import encoder
from .cache import code_version, run_step, step_key
from .claims import claims as claim_lines  # the name claims stays the submodule
from .render import render
from .settings import QUICK, ReportSettings, StepRun, check_inputs, settings_from_args
from .steps import defense_step, extraction_step, fingerprint_step, zoo_step

__all__ = ["QUICK", "ReportSettings", "StepRun", "check_inputs", "run_report", "settings_from_args"]


def run_report(zoo_dir: Path, out_dir: Path, s: ReportSettings, fresh: bool = False, command: str = "psml report",
               defense: bool = True, log=print) -> Path:
    started = time.time()
    manifest, data = check_inputs(zoo_dir, out_dir, s)
    code = code_version()
    cache = out_dir / ".cache"
    plan = [("zoo", zoo_step(zoo_dir, s, log)), ("fingerprint", fingerprint_step(zoo_dir, manifest, data, s, log))]
    if manifest.zoo.kind == "encoder":
        plan.append(("encoder_extraction", encoder.extraction_step(zoo_dir, manifest, data, s, log)))
        if defense:
            plan.append(("encoder_defense", encoder.defense_step(zoo_dir, s, log)))
    else:
        plan.append(("extraction", extraction_step(zoo_dir, manifest, data, s, log)))
        if defense:
            plan.append(("defense", defense_step(zoo_dir, s, log)))
    steps = {}
    for i, (name, func) in enumerate(plan, 1):
        log(f"[{i}/{len(plan)}] {name}")
        steps[name] = run_step(name, func, cache, step_key(name, zoo_dir, s, code), fresh, log)
    lines = claim_lines(steps)
    meta = {"zoo": str(zoo_dir), "command": command, "created_unix": started,
            "created_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime(started)), "wall_s": time.time() - started,
            "settings": asdict(s), "code_version": code, "hardware": hardware(), "software": software_versions(),
            "step_seconds": {n: r.seconds for n, r in steps.items()}, "cached": [n for n, r in steps.items() if r.cached]}
    # Stage the whole report, then move it in: report.md last, so a report.md on disk is always a finished one.
    out_dir.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=".report-", dir=out_dir))
    try:
        for r in steps.values():
            for f in r.files:
                shutil.copy2(r.folder / f, stage / f)
        write_json_atomic(stage / "report.json", meta | {"claims": lines, "complete": True,
                                                         "steps": {n: r.result for n, r in steps.items()}})
        write_text_atomic(stage / "report.md", render(steps, lines, meta))
        for p in sorted(stage.iterdir(), key=lambda p: p.name == "report.md"):
            os.replace(p, out_dir / p.name)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    for line in lines:
        log(f"{line['verdict']:<12} {line['claim']}: {line['measured']}")
    log(f"report: {out_dir / 'report.md'} ({time.time() - started:.0f} s)")
    return out_dir / "report.md"


