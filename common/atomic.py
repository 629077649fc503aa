"""Atomic file writes: a crash never leaves a half-written result that looks complete."""

from __future__ import annotations

import json
import os
from pathlib import Path


def write_text_atomic(path: Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)


def write_json_atomic(path: Path, data) -> None:
    write_text_atomic(path, data if isinstance(data, str) else json.dumps(data, indent=2))
