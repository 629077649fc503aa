"""Atomic file writes: a crash never leaves a half-written result that looks complete."""

from __future__ import annotations

import json
import os
import shutil
from contextlib import contextmanager
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


@contextmanager
def staged_folder(final: Path):
    """Yield a hidden ``.<name>.partial-<pid>`` folder beside ``final``; when the block succeeds it replaces
    ``final`` (the old one removed only after the rename), when it fails it is deleted: a failed build never leaves
    a folder that looks complete."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    work = final.with_name(f".{final.name}.partial-{os.getpid()}")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    try:
        yield work
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        if final.exists():
            final.rename(old)
        work.rename(final)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
