"""The router's server-side audit log: ground truth for goodput and for scoring attacks.

JSON Lines, one record per request, appended with a single ``os.write`` on an ``O_APPEND`` descriptor before
the response leaves the router: once a client has its answer the record is in the kernel, so a crash of the
router loses no committed record (``fsync=True`` also survives power loss, at ~ms per request). Every worker of
a router appends to the same file; Linux serialises writes to one regular file, so each line stays whole
whatever the number of workers.
"""

from __future__ import annotations

import json
import os

import orjson
from pathlib import Path
from typing import Iterator

FIELDS = (
    "ts", "request_id", "client", "status", "outcome", "batch_size",
    "req_min_accuracy", "req_max_latency_ms", "eff_min_accuracy", "eff_max_latency_ms",
    "model", "model_accuracy", "model_latency_ms", "router_ms", "triton_ms", "detail", "worker",
)
# Written only when a defense set them: PRADA's W and flag ("detected" on the flagging request), the padding held.
DEFENSE_FIELDS = ("prada_w", "prada_flagged", "detected", "padded_ms", "b4b_coverage", "b4b_sigma")
# outcome: served | no_model (422) | unavailable (503/504 from the backend) | shed (503/429 by admission control)
# | refused (403/429 by a client defense) | invalid (4xx) | unauthorized (401/403). worker: the router worker's
# index (0 with one worker).


class AuditLog:
    def __init__(self, path: Path, fsync: bool = False):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fsync = fsync
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def write(self, record: dict) -> None:
        out = {k: record.get(k) for k in FIELDS}
        out.update((k, record[k]) for k in DEFENSE_FIELDS if k in record)
        line = orjson.dumps(out) + b"\n"
        os.write(self._fd, line)
        if self.fsync:
            os.fsync(self._fd)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def read_audit_log(path: Path) -> Iterator[dict]:
    """Every complete record; a torn last line (crash mid-write) is skipped, never half-read."""
    with open(path, "rb") as f:
        for raw in f:
            if raw.endswith(b"\n"):
                yield json.loads(raw)
