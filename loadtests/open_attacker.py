"""Attackers beside the open loop: the same attacker as the Locust run's AttackerUser (staircase fingerprinting,
then extraction batches back to back), one thread each in a process of their own, during the attack window
[warmup_s, warmup_s + attack_s) of the open loop's clock. Every request is recorded like a benign one (exact
time from its send: the attacker is a closed loop) and each transcript is saved as the Locust users save theirs.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np

from stack.clients import RouterClient, RouterRejected

from .arrivals import ATTACKER_STREAM, stream_rng
from .config import LoadSettings


class RecordingClient(RouterClient):
    """A RouterClient that records every request's exact time under ``"attacker <path>"``."""

    def __init__(self, url: str, api_key: str, rows: list):
        super().__init__(url, api_key)
        self.rows = rows

    def request(self, method, path, body=None, headers=None):
        t0 = time.perf_counter()
        status = 0
        try:
            status, answer = super().request(method, path, body, headers)
            return status, answer
        finally:
            if method == "POST":
                self.rows.append({"name": f"attacker {path}", "ms": (time.perf_counter() - t0) * 1e3,
                                  "ok": status == 200, "status": status})


def _attacker(k: int, url: str, zoo_info: dict, load: LoadSettings, pool: np.ndarray, start: float, stop: float,
              rows: list) -> None:
    from attacks.fingerprint import FingerprintSettings, staircase
    from attacks.oracle import SpecOracle

    client = RecordingClient(url, load.attacker_key, rows)
    client.use_endpoint(zoo_info.get("endpoint", "/v1/infer"))
    time.sleep(max(0.0, start - time.perf_counter()))
    fingerprint = staircase(SpecOracle(client, pool[:1]), zoo_info, FingerprintSettings())
    spec = fingerprint.spec or {}
    order = stream_rng(load.seed, ATTACKER_STREAM, k).permutation(len(pool) - 1)[: load.attack_budget] + 1
    xs, ps = [], []
    for i in range(0, len(order), load.attack_batch):
        if time.perf_counter() >= stop:
            break
        x = pool[order[i : i + load.attack_batch]]
        try:
            ps.append(client.infer(x, **spec))
            xs.append(x)
        except RouterRejected:
            pass
    client.close()
    out = Path(load.out_dir) / f"attacker-open-{k}.npz"
    tmp = out.with_suffix(".tmp.npz")
    np.savez(tmp, x=np.concatenate(xs) if xs else np.zeros((0, 1), np.float32),
             probs=np.concatenate(ps) if ps else np.zeros((0, 1), np.float32),
             fingerprint_queries=fingerprint.queries, spec=str(spec))
    tmp.replace(out)


def run_attackers(url: str, zoo_info: dict, load: LoadSettings, s, start_at) -> None:
    """``s``: the open loop's settings (its duration bounds the attack window); ``start_at()``: the common start."""
    import attacks.fingerprint  # noqa: F401  (imported before the start: an import must not eat the attack window)
    import attacks.oracle  # noqa: F401
    from zoo.data import Dataset

    pool = Dataset.load(Path(load.data_file)).x["attacker_pool"]
    rows: list[dict] = []
    t0 = start_at()
    start, stop = t0 + load.warmup_s, t0 + min(s.duration_s, load.warmup_s + load.attack_s)
    threads = [threading.Thread(target=_attacker, args=(k, url, zoo_info, load, pool, start, stop, rows))
               for k in range(load.attackers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    path = Path(load.out_dir) / "latencies-open-attackers.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
