"""PRADA's per-key state in the store (router setting ``state_store``), shared by every worker of every router.

The detector itself is router/defenses/prada.py, unchanged; what moves is its state. Per key the store holds a
hash (``ver``, ``epoch``, ``flagged_at``, and the small numbers as JSON ``meta``: per class the running sums of
DG_c and T_c, the counters, the last W), each class's members as appended float32 rows (``prada:m:<class>``, one
string per class: APPEND, never rewritten) and the last distances as float32 (``prada:d``, trimmed to ``window``
once twice as long).

Nearest-member search needs the members, so it runs in the router on a copy of the key's state that each worker
keeps, not in a script. A request adds its batch to the copy and commits the difference with one script that
applies it only when the key is still at the epoch and version the copy holds (compare-and-set). A copy never
reads the key whole again once it has it: the admission script's reply carries the key's version and flag, and a
copy that is behind (another worker or router wrote the key) asks only for what was appended since (``FETCH``
with the row and distance counts it holds: replies of a few hundred bytes where the whole state is up to ~8 MB);
a commit that lost a race puts its batch back, catches up the same way and commits again. Within a worker one
key's requests take turns (a lock per key).

Round trips. Under ``log`` and ``throttle`` no answer depends on the commit's outcome: the commit leaves with the
answer (the same turn of the event loop) but its reply is not waited for (the key's next request on this worker
waits for it before touching the copy; a commit that lost a race is applied again in the background and a flag it
raises refuses or throttles the key's later requests, as the store tells every admission; the flag's
``detected`` goes into the audit record of the key's next request on this worker). Under ``block`` the request
whose batch crosses the threshold must be withheld, and whether it crosses is only certain once the commit
applied where the copy said (another worker may have written the key first), so its answer waits for the reply.

The operator's reset: ``DEL <prefix>:{<client>}:prada`` starts the key's detector over (a new epoch: every copy
is read again; the old members and distances are overwritten by the next commit); ``HDEL <prefix>:{<client>}:prada
flagged_at`` clears only the flag (the copies hear it from the next admission; the detector keeps the key's
history and flags it again at its next test if the stream still looks synthetic).
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from array import array

import numpy as np
import orjson

from ..errors import StateStoreContended
from ..state_store import StateStore, StateStoreError, StateStoreReplyLost, StateStoreUnavailable, bulks, key
from .prada import BLOCKED, Blocked, Prada, _ClientState, _Group
from .prada_copy import KeyCopy, StagedCommit, mark_batch, undo_batch
from .prada_scripts import COMMIT, FETCH

MAX_COMMIT_TRIES = 16  # conflicts in a row before a 503 (each round lets one writer through: a key hot on many workers)
SHARED_S = 1.0  # a key another worker wrote within this long commits every batch at once (staging would lose races)

class StorePrada:
    """``observe`` as Prada's, its state in the store; the admit script reads the flag (router/shared_state.py).

    ``commit_ms`` (under log only; 0: a commit with every request): a key's batches on this worker are applied to
    its copy at once and sent to the store together when the first of them is this old, or at once when they
    hold ``commit_samples`` samples or one of them raised the flag. A key that another worker wrote within
    SHARED_S (its admission saw the store move, or a commit lost a race) is not staged: every batch goes at once,
    as staged commits of a key spread over workers would each lose the race and be applied twice. Under throttle
    nothing is staged: the key's stream merged over workers must be tested at once (a red team had 126-168 samples
    served past the flag over four workers with staging). What it costs: other workers see a key's newest batches
    up to ``commit_ms`` later, and a worker killed without its shutdown loses at most that much of its keys'
    batches from the detector. Batches certainly not in the store (a commit that never left, or lost every race)
    are kept (``unobserved``) and committed in the background, with the key's next request, and at shutdown."""

    def __init__(self, prada: Prada, store: StateStore, prefix: str, commit_ms: float = 0.0,
                 commit_samples: int = 256):
        self.prada, self.store, self.prefix = prada, store, prefix
        self.commit_s = commit_ms / 1e3 if prada.action == "log" else 0.0  # block: each answer waits for its commit
        self.commit_samples = commit_samples
        self._fetch, self._commit = store.script(FETCH), store.script(COMMIT)
        self.copies: dict[str, KeyCopy] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._keys: dict[str, tuple[bytes, bytes, bytes]] = {}  # client -> encoded keys and constant arguments
        self._tasks: set = set()
        # batches answered under log/throttle whose commits lost every race (StateStoreContended): certainly not in
        # the store, sent with the key's next request on this worker, before its own batch
        self.unobserved: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
        self._retrying: set[str] = set()  # keys whose unobserved batches a background task will commit

    def seen(self, client: str, version: int, flagged_at: bytes) -> None:
        """The key's version and flag as the admission of one of its requests read them."""
        copy = self.copies.get(client)
        if copy is not None:
            copy.seen = (version, bool(flagged_at))

    def _keys_of(self, client: str) -> tuple[bytes, bytes, bytes]:
        k = self._keys.get(client)
        if k is None:
            members = key(self.prefix, client, "prada:m:")
            k = self._keys[client] = (bulks(2, key(self.prefix, client, "prada"), key(self.prefix, client, "prada:d")),
                                      bulks(8 * self.prada.window, 4 * self.prada.window, members), bulks(members))
        return k

    async def observe(self, client: str, x: np.ndarray, labels: np.ndarray) -> dict:
        lock = self._locks.get(client) or self._locks.setdefault(client, asyncio.Lock())
        async with lock:
            copy = await self._current(client)
            if copy.state.flagged_at is not None and self.prada.action == "block":
                raise Blocked(BLOCKED)  # admitted before the flag rose, answered after: withheld
            copy = await self._observe_left_over(client, copy)
            info = self._stage(copy, x, labels)
            if self.prada.action != "block":  # no answer waits on the commit's outcome
                p = copy.pending
                if not self.commit_s or p.detected is not None or p.samples >= self.commit_samples or (
                        copy.shared_until and time.monotonic() < copy.shared_until):
                    self._flush(client, copy)
                elif copy.timer is None:
                    copy.timer = asyncio.get_running_loop().call_later(self.commit_s, self._flush, client, copy)
                if copy.late is not None:
                    info["detected"], copy.late = copy.late, None
                return info
            info = await self._settle(client, copy, self._send(client, copy))
            self.prada.refuse_if_newly_blocked(info)
            return info

    async def drain(self) -> None:
        """At shutdown: every key's batches not yet sent, sent now, every commit out settled (one that lost a race
        applied again) and the unobserved batches committed, for at most the store's socket timeout a few times
        over."""
        for client, copy in list(self.copies.items()):
            if copy.pending is not None and copy.settled is None:
                self._flush(client, copy)
        out = [asyncio.shield(c.settled) for c in self.copies.values() if c.settled is not None]
        out += [asyncio.ensure_future(self._commit_left_over(client)) for client in list(self.unobserved)]
        if out:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(4 * self.store.socket_timeout_s):
                    await asyncio.gather(*out, return_exceptions=True)

    def _flush(self, client: str, copy: KeyCopy) -> None:
        """Send the copy's pending batches as one commit whose reply nobody waits for (``_committed`` takes it);
        the key's next request on this worker waits for it (``settled``) before touching the copy."""
        copy.stop_timer()
        if copy.pending is None or self.copies.get(client) is not copy:
            return
        if copy.settled is not None:  # a commit of the copy is still out (never expected): go after it
            copy.timer = asyncio.get_running_loop().call_later(self.commit_s or 0.001, self._flush, client, copy)
            return
        c = self._send(client, copy)
        copy.settled = asyncio.get_running_loop().create_future()
        if c.sent is None:  # no live connection: commit (connecting) in the background
            self._spawn(self._apply_again(client, copy, c))
        else:
            c.sent.add_done_callback(lambda _, copy=copy, c=c: self._committed(client, copy, c))

    async def _observe_left_over(self, client: str, copy: KeyCopy) -> KeyCopy:
        """Commit, waiting for each, the key's batches whose commits lost every race; a flag one of them raises
        goes into this request's audit record (``late``). Contended again: the rest stay queued, this request
        is refused (503, never served unobserved)."""
        left = self.unobserved.pop(client, None)
        if left and copy.pending is not None:  # what is staged goes first, on its own
            self._flush(client, copy)
            try:
                copy = await self._current(client)
            except (StateStoreUnavailable, StateStoreError):
                self._keep_unobserved(client, left, older=True)
                raise
        while left:
            self._stage(copy, *left[0])
            try:
                info = await self._settle(client, copy, self._send(client, copy))
            except (StateStoreContended, StateStoreUnavailable, StateStoreError) as e:
                if getattr(e, "maybe_in_store", False):  # its commit's reply was lost: it may be in, never twice
                    left.pop(0)
                self._keep_unobserved(client, left, older=True)
                raise
            left.pop(0)
            if "detected" in info:
                copy.late = info["detected"]
        return self.copies.get(client, copy)

    async def _current(self, client: str) -> KeyCopy:
        """This worker's copy of the key, its last commit settled and caught up with the store. Batches still
        staged stay staged unless the store moved (another worker wrote the key): then they are sent first (the
        commit loses the race and is applied again on top of what the store holds)."""
        copy = self.copies.get(client)
        if copy is not None and copy.moved():  # another worker wrote the key: stage nothing for a while
            copy.shared_until = time.monotonic() + SHARED_S
            if copy.pending is not None:
                self._flush(client, copy)
        if copy is not None and copy.settled is not None:
            try:
                async with asyncio.timeout(4 * self.store.socket_timeout_s):
                    await asyncio.shield(copy.settled)
            except TimeoutError:
                raise StateStoreUnavailable() from None
            copy = self.copies.get(client)
        if copy is None:
            copy = KeyCopy()
            await self._catch_up(client, copy)
            self.copies[client] = copy
        elif copy.behind():  # (batches still staged here: the store did not move, or they went above)
            await self._catch_up(client, copy)
        return copy

    def _stage(self, copy: KeyCopy, x: np.ndarray, labels: np.ndarray) -> dict:
        """The batch into the copy (and into its pending commit); its audit fields."""
        copy.dim = copy.dim or int(np.prod(np.shape(x)[1:]))
        s = copy.state
        mark = mark_batch(s, dict.fromkeys(np.asarray(labels).tolist()))
        info = self.prada.update(s, x, labels)
        p = copy.pending
        if p is None:
            p = copy.pending = StagedCommit(mark)
        else:  # the copy before the first batch: a class first touched now is as it was before this one
            for k, before in mark.touched.items():
                p.mark.touched.setdefault(k, before)
        p.batches.append((x, labels))
        p.samples, p.info = p.samples + len(x), info
        if "detected" in info and p.detected is None:
            p.detected = info["detected"]
        for k in mark.touched:
            g = s.groups[k]
            copy.sums[str(k)] = [g.d_n, g.d_sum, g.d_sumsq, g.threshold]
        return info

    def _send(self, client: str, copy: KeyCopy) -> StagedCommit:
        """The pending batches' difference to the store (its reply waited for by ``_settle`` or handled by
        ``_committed``). Only the classes they touched are re-encoded, not every group's."""
        c, copy.pending = copy.pending, None
        copy.stop_timer()
        s = copy.state
        touched, nd, flagged_at = c.mark.touched, c.mark.n_distances, c.mark.flagged_at
        keys, constants, _ = self._keys_of(client)
        parts, count = [], 12
        for k, before in touched.items():
            g = s.groups[k]
            held = 0 if before is None else before[0]
            if g.n > held:
                parts.append(bulks(k, held, g.buf[held: g.n].tobytes()))
                count += 3
        meta = orjson.dumps({"dim": copy.dim, "nd": s.n_distances, "ta": s.tested_at, "w": s.w, "s": s.samples,
                             "g": copy.sums})
        distances = s.distances[len(s.distances) - min(s.n_distances - nd, len(s.distances)):]
        c.parts = b"".join([keys, bulks(copy.epoch, copy.version, meta, s.flagged_at if flagged_at is None and
                                        s.flagged_at else b"", nd, array("f", distances).tobytes()), constants, *parts])
        c.count = count
        c.sent = self.store.submit(self._commit, c.parts, count)
        return c

    def _keep_unobserved(self, client: str, batches: list, older: bool = False) -> None:
        """Batches answered whose commit certainly did not reach the store: kept, committed with the key's next
        request here, by a background task once the store answers, or at shutdown; in the order they were
        answered (``older``: before those kept already, which PRADA's distances depend on)."""
        if not batches:
            return
        kept = self.unobserved.get(client, [])
        self.unobserved[client] = batches + kept if older else kept + batches
        if client not in self._retrying:
            self._retrying.add(client)
            self._spawn(self._retry_left_over(client))

    async def _retry_left_over(self, client: str) -> None:
        delay = max(self.store.retry_s, self.commit_s, 0.05)
        try:
            while self.unobserved.get(client):
                await asyncio.sleep(delay)
                await self._commit_left_over(client)
                delay = min(2 * delay, 5.0)
        finally:
            self._retrying.discard(client)

    async def _commit_left_over(self, client: str) -> None:
        """The key's unobserved batches committed now (under the key's lock, as a request of the key would)."""
        lock = self._locks.get(client) or self._locks.setdefault(client, asyncio.Lock())
        try:
            async with lock:
                if self.unobserved.get(client):
                    await self._observe_left_over(client, await self._current(client))
        except (StateStoreContended, StateStoreUnavailable, StateStoreError, Blocked):
            pass  # kept (``_observe_left_over``) for the next try, or the key is flagged already

    async def _settle(self, client: str, copy: KeyCopy, c: StagedCommit) -> dict:
        """The commit's outcome (the audit fields of its last batch; ``detected`` when one of them raised the
        flag); after a conflict: the batches out, the copy caught up, the batches in again, commit. After
        MAX_COMMIT_TRIES conflicts, StateStoreContended: no commit of the batches is left in flight then (the last
        conflict submits none), so they are certainly not in the store. A store error says whether they may be
        (``maybe_in_store``: the commit's own reply was lost, so it may have applied)."""
        for attempt in range(MAX_COMMIT_TRIES):
            committing = True
            try:
                if c.sent is None:
                    version, epoch = await self.store.run_parts(self._commit, c.parts, c.count)
                else:
                    version, epoch = await self.store.result(c.sent, self._commit, c.parts, c.count)
                committing = False
                if version:
                    copy.version, copy.epoch = version, epoch
                    return c.info if c.detected is None else c.info | {"detected": c.detected}
                copy.shared_until = time.monotonic() + SHARED_S
                undo_batch(copy, c.mark)
                await self._catch_up(client, copy)
            except (StateStoreUnavailable, StateStoreError) as e:
                self.copies.pop(client, None)  # it holds batches the store may never have taken: read it again
                e.maybe_in_store = committing and isinstance(e, StateStoreReplyLost)
                raise
            if copy.state.flagged_at is not None and self.prada.action == "block":
                raise Blocked(BLOCKED)  # another worker's batch flagged the key first
            if attempt == MAX_COMMIT_TRIES - 1:
                break
            for x, labels in c.batches:
                self._stage(copy, x, labels)
            c = self._send(client, copy)
        self.copies.pop(client, None)
        raise StateStoreContended()

    def _committed(self, client: str, copy: KeyCopy, c: StagedCommit) -> None:
        """A commit nobody waited for has its reply: done, unless it lost a race (then applied again here)."""
        fut = c.sent
        reply = None if fut.cancelled() or fut.exception() is not None else fut.result()
        if type(reply) is list and reply[0]:
            copy.version, copy.epoch = reply
            settled, copy.settled = copy.settled, None
            settled.set_result(None)
            return
        self._spawn(self._apply_again(client, copy, c))

    def _spawn(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)  # a reference, so that the task is not collected before it runs
        task.add_done_callback(self._tasks.discard)

    async def _apply_again(self, client: str, copy: KeyCopy, c: StagedCommit) -> None:
        try:
            info = await self._settle(client, copy, c)
            if "detected" in info and c.detected is None:  # its requests were answered before it was known
                copy.late = info["detected"]
                print(f"router: prada flagged {client!r} after its answer left ({info['detected']}): a commit that "
                      "raced another router's was applied again", file=sys.stderr, flush=True)
        except StateStoreContended:
            # their answers have left: the batches must still reach the detector (the key's next request here, a
            # background task, shutdown)
            self._keep_unobserved(client, c.batches)
            print(f"router: prada commit for {client!r} lost {MAX_COMMIT_TRIES} races to other routers; its batches "
                  "go with the key's next request", file=sys.stderr, flush=True)
        except (StateStoreUnavailable, StateStoreError) as e:
            # the copy was dropped (read again by the key's next request); batches whose commit never applied
            # are kept, one whose reply was lost may be in the store (never counted twice: lost, logged)
            if e.maybe_in_store:
                print(f"router: prada commit for {client!r} lost with its reply ({len(c.batches)} batches may be "
                      "missing from the detector)", file=sys.stderr, flush=True)
            else:
                self._keep_unobserved(client, c.batches)
        except Blocked:
            pass  # the key is flagged already
        finally:
            settled, copy.settled = copy.settled, None
            settled.set_result(None)

    async def _catch_up(self, client: str, copy: KeyCopy) -> None:
        """What the store holds and the copy lacks: only what was appended since, or the whole state (a new copy,
        a new epoch)."""
        s = copy.state
        args = [copy.epoch, s.n_distances]
        for c, g in s.groups.items():
            args += [c, g.n]
        version, epoch, flagged_at, meta, whole, distances, *groups = await self.store.run_parts(
            self._fetch, self._keys_of(client)[0] + self._keys_of(client)[2] + bulks(*args), 4 + len(args))
        if whole:
            s = copy.state = _ClientState()
            copy.dim, copy.sums = None, {}
        copy.version, copy.epoch = int(version), epoch
        s.flagged_at = int(flagged_at) if flagged_at else None
        if not meta:
            return
        m = orjson.loads(meta)
        copy.dim = m["dim"]
        d = np.frombuffer(distances, np.float32).tolist()
        if len(d) < m["nd"] - s.n_distances:  # more than the store keeps: its last `window`, all a test reads
            s.distances = d
        else:
            s.distances += d
            if len(s.distances) > 2 * self.prada.window:
                del s.distances[: -self.prada.window]
        s.n_distances, s.tested_at, s.w, s.samples = m["nd"], m["ta"], m["w"], m["s"]
        for c, rows in zip(groups[::2], groups[1::2]):
            sums, rows = m["g"][c.decode()], np.frombuffer(rows, np.float32).reshape(-1, copy.dim)
            g = s.groups.get(int(c))
            if g is None:
                s.groups[int(c)] = _Group.restore(rows, *sums)
            else:
                g.extend(rows)
                g.d_n, g.d_sum, g.d_sumsq, g.threshold = sums
        copy.sums = m["g"]
