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
        try:
            s.bind((host, port))
        except OSError as e:
            raise PortInUseError(f"{what} port {port} on {host} is already in use ({e.strerror})") from e
