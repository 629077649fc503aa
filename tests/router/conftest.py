"""Fixtures of the store-backed router tests."""

import pytest

from stack.store_server import StoreServer


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A real valkey-server on a free loopback port, one per test module (each module keys its own prefixes)."""
    with StoreServer(tmp_path_factory.mktemp("store")) as server:
        yield server
