"""The state file of a server a ``psml <server> start`` left running (router, store): read it, refuse a second
start while its process lives, stop it only if the pid is still ours. Triton's own state (stack/triton_server
ServerState) follows the same rules."""

from __future__ import annotations

import json
from pathlib import Path

from common.errors import PsmlError


def load_state(path: Path) -> dict | None:
    """The recorded server ({"pid", "url", ...}), or None: no file, unreadable, or a stopped server's leftovers."""
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) and {"pid", "url"} <= set(state) else None


def refuse_if_running(path: Path, what: str) -> None:
    """Before a start: a live server refuses it; a stale state file (its process gone or reused) is replaced."""
    from stack.triton_server import stale_reason

    old = load_state(path)
    if old:
        reason = stale_reason(old["pid"], old.get("start_ticks"))
        if reason is None:
            raise PsmlError(f"the {what} is already running (pid {old['pid']}, {old['url']}); psml {what} stop first")
        print(f"stale {what} state file ({reason}): replaced")


def stop_recorded(state: dict, what: str) -> None:
    """Stop the recorded server's process group, never signalling a pid that is no longer ours."""
    from stack.triton_server import stale_reason, stop_process_group

    reason = stale_reason(state["pid"], state.get("start_ticks"))
    if reason is None:
        stop_process_group(state["pid"], timeout_s=10)  # SIGTERM first: a store flushes its append-only file
    else:
        print(f"stale {what} state file ({reason}): removed")
