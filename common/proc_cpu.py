"""CPU seconds (user + system) of a process and all its descendants, from /proc (Linux).

Used by the benchmarks to say where a machine's cores went (router workers, Triton and its Python-backend
stubs, the load generator) per request. Descendants that exited before a reading are not counted.
"""

from __future__ import annotations

import os
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return out


def _own_cpu_s(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICK  # utime, stime


def tree_cpu_s(pid: int) -> float:
    total, todo, seen = 0.0, [pid], set()
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        total += _own_cpu_s(p)
        todo += _children(p)
    return total


def self_cpu_s() -> float:
    t = os.times()
    return t.user + t.system
