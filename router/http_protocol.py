"""uvicorn's httptools protocol with the two bounds a public listener needs and uvicorn lacks.

- A header deadline: uvicorn's keep-alive timer is cancelled by the first byte of a request, so a client that
  sends a header line every few seconds holds its connection for ever (slowloris). Here the headers must be
  complete within ``header_timeout_s`` of the connection opening or of the previous answer; otherwise the
  connection is closed. The body's deadline is the router's (``body_timeout_ms``, answered 408).
- A bound on header bytes: httptools accepts headers of any size, and the router quotes some of them in
  errors. Over ``max_header_bytes`` the answer is 431 and the connection closes. Counted per request.
- Bounds on connections, in all and per client address: idle connections cost a file descriptor each, and
  140 of them exhausted a router whose descriptor limit was 128 (every client then got no answer at all).
  Over a bound the new connection gets 503 and is closed at once; the bound in all is kept below the
  process's descriptor limit (``connection_bound``).
"""

from __future__ import annotations

import asyncio

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

MAX_HEADER_BYTES = 64 * 1024


class HeadersTooLarge(Exception):
    pass


FD_RESERVE = 128  # descriptors kept for the audit log, Triton connections, the metrics listener, imports


def connection_bound(wanted: int) -> int:
    """Raise the soft descriptor limit as far as the hard one allows, and keep ``wanted`` below what it gives."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted + FD_RESERVE if hard == resource.RLIM_INFINITY else min(hard, wanted + FD_RESERVE)
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return max(1, min(wanted, soft - FD_RESERVE))


def bounded_protocol(header_timeout_s: float, max_header_bytes: int = MAX_HEADER_BYTES,
                     max_connections: int = 4096, max_connections_per_ip: int = 1024) -> type:
    """An HttpToolsProtocol class with these bounds, for ``uvicorn.Config(http=...)``."""
    open_by_ip: dict[str, int] = {}
    busy = orjson.dumps({"error": "too_many_connections", "detail": "the router holds as many connections as it "
                                                                    "allows; retry later"})
    refused = (b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\n"
               b"connection: close\r\ncontent-length: %d\r\n\r\n%s" % (len(busy), busy))

    body = orjson.dumps({"error": "headers_too_large", "detail": f"request headers exceed {max_header_bytes} bytes"})
    too_large = (b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json\r\n"
                 b"connection: close\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))

    class BoundedHttpToolsProtocol(HttpToolsProtocol):
        _deadline: asyncio.TimerHandle | None = None
        _header_bytes = 0
        _ip: str | None = None  # set once the connection is counted

        def _arm(self) -> None:
            self._disarm()
            self._deadline = self.loop.call_later(header_timeout_s, self._headers_too_slow)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _headers_too_slow(self) -> None:
            self._deadline = None
            busy = self.cycle is not None and not self.cycle.response_complete
            if not busy and not self.transport.is_closing():
                self.transport.close()

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            ip = self.client[0] if self.client else "?"
            if sum(open_by_ip.values()) >= max_connections or open_by_ip.get(ip, 0) >= max_connections_per_ip:
                transport.write(refused)
                transport.close()
                return
            self._ip = ip
            open_by_ip[ip] = open_by_ip.get(ip, 0) + 1
            self._arm()

        def connection_lost(self, exc) -> None:
            self._disarm()
            if self._ip is not None:
                left = open_by_ip[self._ip] - 1
                if left:
                    open_by_ip[self._ip] = left
                else:
                    del open_by_ip[self._ip]
                self._ip = None
            super().connection_lost(exc)

        def on_message_begin(self) -> None:
            self._header_bytes = 0  # per request: pipelined requests each get the whole bound
            super().on_message_begin()

        def on_url(self, url: bytes) -> None:
            self._count(len(url))
            super().on_url(url)

        def on_header(self, name: bytes, value: bytes) -> None:
            self._count(len(name) + len(value))
            super().on_header(name, value)

        def _count(self, n: int) -> None:
            self._header_bytes += n
            if self._header_bytes > max_header_bytes:
                if not self.transport.is_closing():
                    self.transport.write(too_large)
                    self.transport.close()
                raise HeadersTooLarge  # stops the parser: uvicorn drops the rest of the request

        def on_headers_complete(self) -> None:
            self._disarm()
            super().on_headers_complete()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing() and not self.pipeline:
                self._arm()

    return BoundedHttpToolsProtocol
