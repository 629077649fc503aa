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
from typing import Iterator, TypedDict

class AuditRecord(TypedDict, total=False):
    """One request's record: what every reader (goodput, /metrics, the attacks' scoring, load-test summaries,
    benchmarks) may rely on. Always written: ts .. seed (None where the request never got that far);
    defense fields only when a defense set them."""

    ts: float  # UNIX seconds at receipt
    request_id: str  # keyed hash: no counter a client could read the load from
    client: str | None  # the API key's client name (None before authentication)
    status: int  # the HTTP status answered
    outcome: str  # an Outcome value (router/errors.py): served, shed, no_model, refused, unauthorized, ...
    batch_size: int | None
    req_min_accuracy: float | None  # as the client asked
    req_max_latency_ms: float | None
    eff_min_accuracy: float | None  # after requirement defenses (metric noise): never in the answer
    eff_max_latency_ms: float | None
    model: str | None  # the model that served (or was selected before a later failure)
    model_accuracy: float | None  # its profiled accuracy and selection latency
    model_latency_ms: float | None
    router_ms: float  # receipt to answer, in the router, padding included
    triton_ms: float | None  # the backend call alone
    detail: str | None  # the error's sentence (clipped to MAX_DETAIL_CHARS)
    worker: int  # the router worker's index (0 with one worker)
    seed: int  # the router's root seed (given, or drawn from OS entropy at start)
    # defense fields
    prada_w: float | None  # PRADA's Shapiro-Wilk W, its flag, and "prada after N samples" on the flagging request
    prada_flagged: bool
    detected: str
    padded_ms: float  # held by latency_padding
    b4b_coverage: float  # B4B: the key's bucket coverage and the noise it got
    b4b_sigma: float
    state_store: str  # "unavailable": served without per-client defenses (state_store_fail_open)


_DEFENSE = {"prada_w", "prada_flagged", "detected", "padded_ms", "b4b_coverage", "b4b_sigma", "state_store"}
FIELDS = tuple(k for k in AuditRecord.__annotations__ if k not in _DEFENSE)
DEFENSE_FIELDS = tuple(k for k in AuditRecord.__annotations__ if k in _DEFENSE)


class AuditLog:
    """Appends records to ``path``; follows the path when the file is rotated or deleted (a new inode) and on
    ``reopen()`` (SIGHUP); a short write is completed; a write that fails raises OSError to the caller, which
    must not answer as if the record existed (router/app.py answers 503)."""

    def __init__(self, path: Path, fsync: bool = False):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fsync = fsync
        self._fd = -1
        self._open()

    def _open(self) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        old, self._fd = self._fd, fd
        st = os.fstat(fd)
        self._ident = (st.st_dev, st.st_ino)
        if old >= 0:
            os.close(old)

    def reopen(self) -> None:
        """Write to whatever file ``path`` names now (logrotate's postrotate: kill -HUP)."""
        self._open()

    def _follow(self) -> None:
        # one stat per record (~1 us): a rotated (renamed) or deleted log is noticed on the next record, not never
        try:
            st = os.stat(self.path)
            moved = (st.st_dev, st.st_ino) != self._ident
        except FileNotFoundError:
            moved = True
        if moved or self._fd < 0:
            self._open()

    def write(self, record: dict) -> None:
        out = {k: record.get(k) for k in FIELDS}
        out.update((k, record[k]) for k in DEFENSE_FIELDS if k in record)
        line = memoryview(orjson.dumps(out) + b"\n")
        self._follow()
        while line:  # os.write may write less than asked (a signal, a nearly full disk): write the rest
            line = line[os.write(self._fd, line):]
        if self.fsync:
            os.fsync(self._fd)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def read_audit_log(path: Path, torn: list | None = None) -> Iterator[dict]:
    """Every whole record. A torn line (a crash mid-write, a disk that filled) is skipped, never half-read;
    ``torn``, when given, gets the 1-based number of each line skipped."""
    with open(path, "rb") as f:
        for n, raw in enumerate(f, 1):
            try:
                if not raw.endswith(b"\n"):
                    raise ValueError("no end of line")
                yield json.loads(raw)
            except ValueError:
                if torn is not None:
                    torn.append(n)
