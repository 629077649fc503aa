"""Benchmark result files: every one records what ran, when, and the hardware and software it ran on."""

from __future__ import annotations

import time
from pathlib import Path

from .atomic import write_json_atomic
from .versions import hardware, software_versions


def write_result(path: Path | str, benchmark: str, fields: dict, created_unix: float | None = None) -> None:
    """Atomically write ``fields`` (seeds, settings, rows ...) with the benchmark's name and its provenance."""
    write_json_atomic(Path(path), {"benchmark": benchmark, "created_unix": created_unix or time.time()} | fields
                      | {"hardware": hardware(), "software": software_versions()})
