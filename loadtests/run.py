"""Run Locust headless against a router: the run folder, the process, and its exit."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from common.errors import PsmlError

LOCUSTFILE = Path(__file__).resolve().parent / "locustfile.py"


def prepare_out_dir(out_dir: Path) -> Path:
    """Create the run folder and remove what an earlier run left there that this run's summary would read."""
    out_dir.mkdir(parents=True, exist_ok=True)
    from .config import INTERRUPTED_FILE, LATENCY_FILE_GLOB, USEFUL_FILE_GLOB

    from .open_loop import GENERATOR_FILE_GLOB

    for old in [*out_dir.glob("attacker-*.npz"), *out_dir.glob(LATENCY_FILE_GLOB), *out_dir.glob(USEFUL_FILE_GLOB),
                *out_dir.glob(GENERATOR_FILE_GLOB), out_dir / INTERRUPTED_FILE, out_dir / "perf.csv"]:
        old.unlink(missing_ok=True)
    return out_dir


def run_locust(router_url: str, settings, out_dir: Path, processes: int = 0, locustfile: Path = LOCUSTFILE) -> Path:
    """Run Locust headless to the end of the load shape; returns the CSV prefix. ``settings``: what the
    locustfile reads from the environment (``to_env()``) and how long it runs (``total_s``)."""
    prefix = out_dir / "locust"
    cmd = [sys.executable, "-m", "locust", "-f", str(locustfile), "--headless", "--host", router_url,
           "--csv", str(prefix), "--html", str(out_dir / "locust.html"), "--exit-code-on-error", "0",
           "--loglevel", "WARNING", "--only-summary",
           "--stop-timeout", "10"]  # stopped users finish their request, so Locust's counts match the audit log
    if processes:
        cmd += ["--processes", str(processes)]
    env = dict(os.environ) | {"PSML_OUT_DIR": str(out_dir)} | settings.to_env()  # users.py's files go there
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(LOCUSTFILE.parent.parent), env.get("PYTHONPATH")]))
    with open(out_dir / "locust.log", "wb") as log:
        r = subprocess.run(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, timeout=settings.total_s + 180)
    if r.returncode != 0 or not Path(f"{prefix}_stats.csv").is_file():
        tail = (out_dir / "locust.log").read_text(errors="replace").strip().splitlines()[-1:] or ["(empty)"]
        raise PsmlError(f"locust failed with code {r.returncode}: {tail[0]} (see {out_dir / 'locust.log'})")
    return prefix
