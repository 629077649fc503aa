"""Loopback port helpers: pick a free port, or fail early and clearly when a chosen one is taken."""

from __future__ import annotations

import socket

from .errors import PortInUseError


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def check_free(host: str, port: int, what: str) -> None:
    """Raise PortInUseError when ``host:port`` cannot be bound (something else listens there)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # SO_REUSEADDR as servers set it: connections of a stopped server in TIME_WAIT do not count, a listener does
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            raise PortInUseError(f"{what} port {port} on {host} is already in use ({e.strerror})") from e
