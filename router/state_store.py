"""The connection to the Redis-protocol store (Valkey or Redis) that holds per-client state when the router's
``state_store`` setting names one: scripts, timeouts, health, and what an unreachable store means.

Every update is one server-side Lua script (EVALSHA; on NOSCRIPT, e.g. after the store restarted, the same call
as EVAL, which also caches the script), so a check and its update are atomic across every worker of every
router. The scripts read the store's clock (TIME): routers on different hosts share one clock for token buckets
and slot leases.

The client is one pipelined connection per worker: commands are written as they come and replies, which the
store sends in order, are parsed by hiredis and handed to the waiting requests in order. Why not redis-py's
asyncio client: measured here it cost ~100 us of router CPU per command (its pool, locks and retry layers) where
the whole store path may add 60 us a request; this costs ~15 us.

An unreachable store costs a request at most ``state_store_connect_timeout_ms``; after a failure the store is
not asked again for ``state_store_retry_ms`` (requests in that time fail at once, no timeout each), and the
first request after it finds out whether the store is back: the router recovers by itself. A store that stops
answering mid-way is cut off after ``state_store_socket_timeout_ms`` (every request waiting on it fails).
"""

from __future__ import annotations

import asyncio
import hashlib
import ssl
import sys
import time
from collections import deque
from urllib.parse import unquote, urlsplit

import hiredis

from .errors import StateStoreError, StateStoreReplyLost, StateStoreUnavailable


class Script:
    """A Lua script, its SHA1, and both command heads (EVALSHA sha, EVAL body) encoded once."""

    def __init__(self, body: str):
        self.body = body.encode()
        self.sha = hashlib.sha1(self.body).hexdigest().encode()
        self._heads = bulks(b"EVALSHA", self.sha), bulks(b"EVAL", self.body)

    def command(self, parts: bytes, count: int, cached: bool = True) -> bytes:
        """The whole command; ``parts``: numkeys, the keys and the arguments as RESP bulk strings (``count`` of
        them, see ``bulks``), so that a caller encodes what never changes once."""
        return b"*%d\r\n%b%b" % (count + 2, self._heads[0] if cached else self._heads[1], parts)


class _Connection(asyncio.Protocol):
    """Replies matched to requests by order, one future per request. Commands issued in one turn of the event
    loop leave in one write (one system call for all the requests in flight at that moment), at the end of that
    turn: a request's release, receipt deletion and PRADA commit leave together, after its answer was written.
    One watchdog timer per connection, not one per command: a command unanswered for ``timeout_s`` cuts the
    connection (every command waited for on it fails; sends go again on the next connection)."""

    def __init__(self, backlog: deque, timeout_s: float, on_send_refused=None):
        self.loop = asyncio.get_running_loop()  # once: each get_running_loop() is a getpid() system call
        self.reader = hiredis.Reader()
        self.pending: deque[asyncio.Future | bytes] = deque()  # bytes: a send nobody waits for
        self.sent_at: deque[float] = deque()  # loop time each pending command was issued
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.out: list[bytes] = []
        self.backlog = backlog
        self.on_send_refused = on_send_refused  # a send answered "not now" (READONLY, BUSY ...): its payload
        self.timeout_s = timeout_s
        self._watchdog: asyncio.TimerHandle | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        while (reply := self.reader.gets()) is not False:
            if not self.pending:  # a reply nobody asked for: the stream is out of step, never guess
                self.abort()
                return
            waiter = self.pending.popleft()
            self.sent_at.popleft()
            if waiter.__class__ is bytes:  # a send's own payload: done, unless the store said "not now"
                if reply.__class__ is hiredis.ReplyError and self.on_send_refused is not None and \
                        str(reply).encode().startswith(TRANSIENT):
                    self.on_send_refused(waiter)
            elif not waiter.done():
                waiter.set_result(reply)

    def connection_lost(self, exc) -> None:
        self.closed = True
        for waiter in self.pending:
            if waiter.__class__ is bytes:  # a send the store may never have read: again on the next connection
                self.backlog.append(waiter)
            elif not waiter.done():
                waiter.set_exception(ConnectionError("the store closed the connection"))
        self.pending.clear()
        self.sent_at.clear()
        if self._watchdog is not None:
            self._watchdog.cancel()
        self.out = []  # every send, written or not, is in the backlog above

    def request(self, payload: bytes, reply: bool = True) -> asyncio.Future | bytes:
        """``reply=False``: nobody waits for the reply, but it keeps its place in the queue (exactly one entry per
        command sent), so replies can never shift onto the wrong requests. (CLIENT REPLY SKIP would spare the
        reply, but a store or proxy that refuses CLIENT answers it with two extra replies, which did shift.) Its
        entry is the payload itself: a send whose reply never came (the connection was cut) is sent again on the
        next connection, so every send must be idempotent (they are: releases, receipts' deletions, undos and
        lease returns, each of which acts at most once)."""
        waiter = self.loop.create_future() if reply else payload
        self.pending.append(waiter)
        self.sent_at.append(self.loop.time())
        if self._watchdog is None:
            self._watchdog = self.loop.call_later(self.timeout_s, self._check)
        if not self.out:
            self.loop.call_soon(self._flush)
        self.out.append(payload)
        return waiter

    def _flush(self) -> None:
        out, self.out = self.out, []
        if out and not self.closed:  # closed: its sends went to the backlog (connection_lost)
            self.transport.write(b"".join(out))

    def _check(self) -> None:
        self._watchdog = None
        if self.closed or not self.sent_at:
            return
        left = self.sent_at[0] + self.timeout_s - self.loop.time()
        if left <= 0:  # the oldest command has waited the whole timeout: the store stopped answering
            self.abort()
        else:
            self._watchdog = self.loop.call_later(left, self._check)

    def abort(self) -> None:
        if not self.closed:
            self.transport.abort()


def bulk(p) -> bytes:
    """One RESP bulk string (bytes as they are, anything else as its str)."""
    t = type(p)
    if t is not bytes:
        p = b"%d" % p if t is int else (p if t is str else str(p)).encode()
    return b"$%d\r\n%b\r\n" % (len(p), p)


def bulks(*parts) -> bytes:
    return b"".join(map(bulk, parts))


def encode(*parts) -> bytes:
    """One command in RESP: an array of bulk strings."""
    return b"*%d\r\n%b" % (len(parts), bulks(*parts))


# store errors that mean "not now" (loading its data, a demoted primary, a busy script, no memory, no permission
# after a failover's ACL change): the store is unavailable, not the request wrong
TRANSIENT = (b"LOADING", b"READONLY", b"BUSY", b"MASTERDOWN", b"OOM", b"NOPERM", b"TRYAGAIN", b"CLUSTERDOWN",
             b"NOREPLICAS", b"MISCONF")
BACKLOG_MAX = 10_000  # commands kept while the store is unreachable (slot releases, undos), oldest dropped


class StateStore:
    """``run(script, keys, args)``, ``call(*command)``, or raise StateStoreUnavailable."""

    def __init__(self, url: str, connect_timeout_ms: float, socket_timeout_ms: float, retry_ms: float):
        u = urlsplit(url)
        self.url, self.host, self.port = url, u.hostname or "127.0.0.1", u.port or 6379
        self.password = unquote(u.password) if u.password else None
        self.db = int(u.path.strip("/") or 0)
        self.tls = ssl.create_default_context() if u.scheme == "rediss" else None
        self.connect_timeout_s, self.socket_timeout_s = connect_timeout_ms / 1e3, socket_timeout_ms / 1e3
        self.retry_s = retry_ms / 1e3
        self.down_until = 0.0  # monotonic time before which the store is not asked again
        self.failures = 0
        self._conn: _Connection | None = None
        self._connecting: asyncio.Future | None = None
        self._backlog: deque[bytes] = deque(maxlen=BACKLOG_MAX)
        self._resend: asyncio.TimerHandle | None = None

    @staticmethod
    def script(lua: str) -> Script:
        return Script(lua)

    async def run(self, script: Script, keys: list, args: list):
        return await self.run_parts(script, bulks(len(keys), *keys, *args), 1 + len(keys) + len(args))

    async def run_parts(self, script: Script, parts: bytes, count: int):
        """``run`` with the numkeys, keys and arguments encoded by the caller (``Script.command``)."""
        waiter = self.submit(script, parts, count)
        if waiter is None:
            waiter = await self._submitted(script.command(parts, count))
        return await self.result(waiter, script, parts, count)

    def submit(self, script: Script, parts: bytes, count: int) -> asyncio.Future | None:
        """Send the script and wait for its reply later (``result``), or not at all. None when there is no live
        connection (then ``run_parts``, which connects)."""
        conn = self._conn
        if conn is None or conn.closed or self.down_until:
            return None
        return conn.request(script.command(parts, count))

    async def result(self, waiter: asyncio.Future, script: Script, parts: bytes, count: int):
        """The checked reply of a submitted script; NOSCRIPT (a store restarted, SCRIPT FLUSH): the same as EVAL,
        which also caches it."""
        reply = await self._reply(waiter)
        if type(reply) is hiredis.ReplyError and str(reply).startswith("NOSCRIPT"):
            reply = await self._reply(await self._submitted(script.command(parts, count, cached=False)))
        return self._checked(reply, "a script")

    async def call(self, *command):
        return self._checked(await self._reply(await self._submitted(encode(*command))), str(command[0]))

    def _checked(self, reply, what: str):
        """An error reply: transient ones (LOADING, READONLY ...) are an unavailable store; the rest a 500. The
        store's own text goes to the operator's log, never to a client."""
        if type(reply) is not hiredis.ReplyError:
            return reply
        text = str(reply)
        print(f"router: the state store refused {what}: {text[:200]}", file=sys.stderr, flush=True)
        if text.encode().startswith(TRANSIENT):
            self._mark_down()
            raise StateStoreUnavailable()
        raise StateStoreError("the per-client state store refused a command")

    def send(self, *command) -> None:
        """A command whose reply nobody waits for (a slot's release, an undo): no round trip on the request's
        path. While the store is unreachable it waits in a bounded backlog, sent first on the next connection."""
        self.send_payload(encode(*command))

    def send_payload(self, payload: bytes) -> None:
        conn = self._conn
        if conn is not None and not conn.closed and not self.down_until:
            conn.request(payload, reply=False)
        else:
            self._backlog.append(payload)

    async def _submitted(self, payload: bytes) -> asyncio.Future:
        if self.down_until:
            if time.monotonic() < self.down_until:
                raise StateStoreUnavailable()
        conn = self._conn
        if conn is None or conn.closed:
            conn = await self._connected()
        return conn.request(payload)

    async def _reply(self, waiter: asyncio.Future):
        """The reply, within the socket timeout (the connection's watchdog cuts it: every request on it fails)."""
        try:
            reply = await waiter
        except (ConnectionError, OSError) as e:
            self._down(e, sent=True)
        if self.down_until:  # the store answers again on a connection that stayed up (after LOADING, BUSY ...):
            self.down_until = 0.0  # what waited in the backlog goes now, not at a reconnect that may never come
            self._send_backlog_on(self._conn)
        return reply

    async def _connected(self) -> _Connection:
        if self._connecting is None:  # one connection attempt at a time; the others wait on it
            self._connecting = asyncio.ensure_future(self._connect())
        connecting = self._connecting
        try:
            return await asyncio.shield(connecting)
        except (ConnectionError, OSError, TimeoutError, hiredis.ProtocolError) as e:
            self._down(e)
        finally:
            if connecting.done() and self._connecting is connecting:
                self._connecting = None

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(self.connect_timeout_s):
            _, conn = await loop.create_connection(lambda: _Connection(self._backlog, self.socket_timeout_s,
                                                                       self._send_refused),
                                                   self.host, self.port, ssl=self.tls)
            hello = ([("AUTH", self.password)] if self.password else []) + ([("SELECT", self.db)] if self.db else [])
            for command in hello:
                reply = await conn.request(encode(*command))
                if isinstance(reply, hiredis.ReplyError):
                    conn.abort()
                    raise ConnectionError(f"{command[0]} refused: {reply}")
        self._send_backlog_on(conn)  # releases and undos that could not be sent, before anything new
        self._conn = conn
        return conn

    def _send_refused(self, payload: bytes) -> None:
        """A send answered "not now" (a store in fail-over, BUSY, OOM ...): back to the backlog, the store treated
        as down for ``retry_s``, then the backlog is sent again on the live connection (each send acts once)."""
        self._backlog.append(payload)
        self._mark_down()
        if self._resend is None:  # (one line per retry, not per send)
            print("router: the state store refused commands sent without waiting: sent again later",
                  file=sys.stderr, flush=True)
            self._resend = asyncio.get_running_loop().call_later(self.retry_s, self._send_backlog)

    def _send_backlog(self) -> None:
        """The retry time after a refused send is over: the backlog goes on the live connection, and later sends
        go straight again (a send refused anew sets the retry time again). Without a live connection the next
        request connects, and the backlog goes first on it."""
        self._resend = None
        conn = self._conn
        if conn is not None and not conn.closed:
            self.down_until = 0.0
            self._send_backlog_on(conn)

    def _send_backlog_on(self, conn: _Connection | None) -> None:
        while conn is not None and not conn.closed and self._backlog:
            conn.request(self._backlog.popleft(), reply=False)

    def _mark_down(self) -> None:
        """A failure: the store is not asked again for ``retry_s`` (requests fail, or pass fail-open, at once)."""
        self.down_until = time.monotonic() + self.retry_s
        self.failures += 1

    def _down(self, e: Exception, sent: bool = False):
        self._mark_down()
        raise (StateStoreReplyLost() if sent else StateStoreUnavailable()) from e

    async def reachable(self) -> bool:
        try:
            return await self.call("PING") == b"PONG"
        except (StateStoreUnavailable, StateStoreError):
            return False

    async def close(self) -> None:
        if self._conn is not None and not self._conn.closed:
            self._conn.transport.close()
        self._conn = None


def key(prefix: str, client: str, what: str) -> str:
    """``<prefix>:{<client>}:<what>``: the braces put all of one client's keys in one cluster slot (a script may
    only touch keys of one slot)."""
    return f"{prefix}:{{{client}}}:{what}"
