"""A worker's copy of one key's PRADA state when the store holds it (router/defenses/prada_store.py), the batches
staged in it on their way into the store, and how a batch is taken out of it again after a lost race."""

from __future__ import annotations

import asyncio
from typing import NamedTuple

import numpy as np

from .prada import _ClientState


class KeyCopy:
    """This worker's copy of one key's state: at ``epoch``/``version`` in the store once ``settled`` (None: no
    commit of this worker's is waiting for its reply). ``seen``: the version and flag the last admission read.
    ``pending``: batches applied to the copy and answered but not yet sent (under log with ``commit_ms``), sent
    together when their time is up. ``shared_until`` (monotonic s): another worker wrote the key lately, so its
    batches are not staged (each would lose the race to the other's and be applied twice)."""

    __slots__ = ("state", "version", "epoch", "dim", "seen", "settled", "late", "sums", "pending", "timer",
                 "shared_until")

    def __init__(self):
        self.state, self.version, self.epoch, self.dim = _ClientState(), 0, b"", None
        self.sums: dict[str, list] = {}  # per class (as in the store's meta) its group's sums, kept current
        self.seen: tuple[int, bool] | None = None
        self.settled: asyncio.Future | None = None
        self.late: str | None = None  # a flag raised after its request was answered (a commit applied again)
        self.pending: StagedCommit | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.shared_until = 0.0

    def moved(self) -> bool:
        """Whether the last admission saw writes this copy lacks (``behind`` without using the sighting up)."""
        seen = self.seen
        return seen is not None and (seen[0] > self.version or (self.state.flagged_at is not None and not seen[1]))

    def stop_timer(self) -> None:
        """No staged commit is due any more (it left, or there is none)."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def behind(self) -> bool:
        """Whether the store holds writes this copy lacks: a newer version, or a flag an operator cleared."""
        moved, self.seen = self.moved(), None
        return moved


class Mark(NamedTuple):
    """A copy as it was before a batch (``undo_batch`` puts it back): per class the batch touched its group's row
    count and sums (None: no group yet), and the key's counters and distance list with the length it had."""

    touched: dict
    n_distances: int
    tested_at: int
    w: float | None
    flagged_at: int | None
    samples: int
    distances: list
    distances_held: int


class StagedCommit:
    """Batches on their way into the store as one commit (one request's under ``block``; under log/throttle all
    that a key's requests on this worker added within ``commit_ms``), kept until the store took them (to apply
    them again after a conflict). ``mark``: the copy as it was before the first of them, for every class they
    touched."""

    __slots__ = ("batches", "samples", "mark", "detected", "info", "parts", "count", "sent")

    def __init__(self, mark: Mark):
        self.batches: list[tuple[np.ndarray, np.ndarray]] = []
        self.samples, self.mark, self.detected = 0, mark, None  # detected: the flag one of them raised, if any
        self.info: dict = {}  # the last batch's audit fields
        self.parts, self.count, self.sent = b"", 0, None


def mark_batch(s: _ClientState, classes) -> Mark:
    """What a batch of these classes changes, as it was before it (``undo_batch`` puts it back; None: no group yet)."""
    touched = {}
    for c in classes:
        g = s.groups.get(c)
        touched[c] = None if g is None else (g.n, g.d_n, g.d_sum, g.d_sumsq, g.threshold)
    return Mark(touched, s.n_distances, s.tested_at, s.w, s.flagged_at, s.samples, s.distances, len(s.distances))


def undo_batch(copy: KeyCopy, mark: Mark) -> None:
    s = copy.state
    touched, nd, s.tested_at, s.w, s.flagged_at, s.samples, held, held_len = mark
    for c, before in touched.items():
        if before is None:
            s.groups.pop(c, None)
            copy.sums.pop(str(c), None)
        else:
            g = s.groups[c]
            g.n, g.d_n, g.d_sum, g.d_sumsq, g.threshold = before
            copy.sums[str(c)] = list(before[1:])
    # the batch's distances are the list's last ones; a trim during the batch made a new list (Prada.update):
    # going back to the one held before it keeps the distances the trim cut
    s.distances = held
    del held[held_len:]
    s.n_distances = nd
