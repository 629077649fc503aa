"""Run the router with uvicorn: ``python -m router.server --settings router.json [--port N]``.

One process, uvloop + httptools, no access log on the hot path (the audit log is the record of requests).
"""

from __future__ import annotations

import argparse
import sys

import uvicorn

from psml.errors import PsmlError

from .app import create_app
from .settings import load_settings


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m router.server")
    ap.add_argument("--settings", required=True, help="router settings JSON")
    ap.add_argument("--port", type=int, help="override the settings' port")
    ap.add_argument("--triton-grpc-url", help="override the settings' Triton gRPC address")
    ap.add_argument("--audit-log", help="override the settings' audit log path")
    ap.add_argument("--host", help="override the settings' bind address (127.0.0.1 unless told otherwise)")
    a = ap.parse_args(argv)
    try:
        s = load_settings(a.settings, port=a.port, triton_grpc_url=a.triton_grpc_url, audit_log=a.audit_log,
                          host=a.host)
        app = create_app(s)
    except PsmlError as e:
        print(f"router: error: {e}", file=sys.stderr)
        return 1
    uvicorn.run(app, host=s.host, port=s.port, loop="uvloop", http="httptools", access_log=False,
                log_level="warning", timeout_graceful_shutdown=5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
