"""Step results cached under ``<out>/.cache/<step>-<key>/``: the key hashes the zoo's manifest, the step's
settings and the code; a step's folder is staged (common.atomic.staged_folder) and gets its cache name only
once the step has finished."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

from common.atomic import staged_folder, write_json_atomic

from .settings import CODE_PACKAGES, ROOT, ReportSettings, StepRun

def code_version() -> str:
    """A hash of every Python file of the project: any code change reruns every step."""
    h = hashlib.sha256()
    for pkg in CODE_PACKAGES:
        for p in sorted((ROOT / pkg).rglob("*.py")) if (ROOT / pkg).is_dir() else []:
            h.update(str(p.relative_to(ROOT)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()[:16]


def step_key(name: str, zoo_dir: Path, s: ReportSettings, code: str) -> str:
    blob = json.dumps({"step": name, "settings": s.step(name), "code": code,
                       "zoo": hashlib.sha256((zoo_dir / "zoo.json").read_bytes()).hexdigest()}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def run_step(name: str, func, cache: Path, key: str, fresh: bool, log) -> StepRun:
    """``func(folder) -> dict`` writes its files into ``folder``; the folder becomes the cache entry when done."""
    folder = cache / f"{name}-{key}"
    if not fresh and (folder / "result.json").is_file():
        meta = json.loads((folder / "result.json").read_text())
        log(f"  {name}: cached ({folder.name}, {meta['seconds']:.0f} s when it ran)")
        return StepRun(name, meta["result"], folder, meta["seconds"], True, meta["files"])
    t0 = time.perf_counter()
    with staged_folder(folder) as work:  # only a finished step gets its cache name
        result = func(work)
        seconds = time.perf_counter() - t0
        files = sorted(p.name for p in work.iterdir() if p.suffix == ".png")
        write_json_atomic(work / "result.json", {"result": result, "seconds": seconds, "files": files})
    log(f"  {name}: done in {seconds:.0f} s")
    return StepRun(name, result, folder, seconds, False, files)


