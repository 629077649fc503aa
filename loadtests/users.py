"""Locust users. ``PsmlUser`` owns the router client and reports every call through Locust's request event
(as Locust's custom-client examples do); the concrete users only decide what to send.

Benign users send what loadtests/benign.py draws (documented in the README), with think time uniform in
[think_min_s, think_max_s].
"""

from __future__ import annotations

import itertools
import json
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import gevent
from gevent import GreenletExit
from locust import User, between, constant, events, task
from locust.exception import StopUser

from attacks.fingerprint import FingerprintSettings, staircase
from stack.clients import RouterClient, RouterRejected
from zoo.data import Dataset

from .benign import benign_indices, benign_requirements
from .useful import BenignAnswer, benign_answer
from .config import INTERRUPTED_FILE, LoadSettings

SETTINGS = LoadSettings.from_env()


class _InFlight:
    """Requests on the wire, so that a stopping test waits for them: a request the router answered but Locust
    never counted would make Locust's totals disagree with the router's audit log."""

    count = 0
    stopping = False


class _Latencies:
    """Every request's exact time as Locust's request event reports it (float ms, perf_counter resolution),
    kept in memory and written once per process at test stop: Locust's own percentiles are rounded buckets."""

    rows: list[tuple[str, float, bool]] = []
    useful: list[BenignAnswer] = []  # benign answers, scored against the labels the benign client knows


@events.request.add_listener
def _on_request(name, response_time, exception=None, **_):
    _Latencies.rows.append((name, float(response_time), exception is None))


def _write_latencies() -> None:
    import os

    if not _Latencies.rows:
        return
    out = Path(SETTINGS.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"latencies-{os.uname().nodename}-{os.getpid()}.jsonl"
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps({"name": n, "ms": t, "ok": ok}) + "\n" for n, t, ok in _Latencies.rows))
    tmp.replace(path)
    if _Latencies.useful:
        path = out / f"useful-{os.uname().nodename}-{os.getpid()}.jsonl"
        tmp = path.with_suffix(".tmp")
        tmp.write_text("".join(json.dumps(asdict(a)) + "\n" for a in _Latencies.useful))
        tmp.replace(path)


@events.test_start.add_listener
def _on_test_start(**_):
    _InFlight.stopping = False
    _Latencies.rows = []
    _Latencies.useful = []


@events.test_stopping.add_listener
def _on_test_stopping(**_):
    _InFlight.stopping = True  # no new request starts once the test is stopping


@events.test_stop.add_listener
def _on_test_stop(**_):
    deadline = time.monotonic() + 10.0
    while _InFlight.count and time.monotonic() < deadline:
        gevent.sleep(0.01)
    _write_latencies()


def record_interrupted(label: str, path: str) -> None:
    out = Path(SETTINGS.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / INTERRUPTED_FILE, "a") as f:
        f.write(json.dumps({"name": f"{label} {path}", "ts": time.time()}) + "\n")


class ReportingRouterClient(RouterClient):
    """A RouterClient whose every call is reported to Locust under ``"<user class> <path>"``."""

    def __init__(self, url, api_key, events, label):
        super().__init__(url, api_key)
        self.events, self.label = events, label

    def request(self, method, path, body=None, headers=None):
        if _InFlight.stopping:
            raise StopUser()
        t0 = time.perf_counter()
        status, answer, exc = 0, None, None
        _InFlight.count += 1
        try:
            status, answer = super().request(method, path, body, headers)
            if status != 200:
                exc = RouterRejected(status, answer or {})
        except Exception as e:  # reported to Locust as a failure; the user carries on
            exc = e
        except GreenletExit:
            # Locust killed this user with the request on the wire (it happens at the very end of a run): the
            # router may have answered and audited it, Locust will never count it, so the summary must.
            record_interrupted(self.label, path)
            raise
        finally:
            _InFlight.count -= 1
        self.events.request.fire(request_type=method, name=f"{self.label} {path}",
                                 response_time=(time.perf_counter() - t0) * 1e3, response_length=0,
                                 exception=exc, context={})
        if exc is not None and not isinstance(exc, RouterRejected):
            raise exc
        return status, answer


_USER_NUMBERS = itertools.count()  # users of this process in the order Locust spawned them


class PsmlUser(User):
    abstract = True
    api_key = ""
    _data: Dataset | None = None

    def on_start(self):
        self.client = ReportingRouterClient(self.host, self.api_key, self.environment.events, self.label)
        # per-user stream from the run's seed tree: (seed, Locust worker, user number in spawn order); a memory
        # address (id) would change every run and make a run unrepeatable
        self.worker_index = int(getattr(self.environment.runner, "worker_index", 0) or 0)
        self.user_index = next(_USER_NUMBERS)
        self.rng = np.random.default_rng([SETTINGS.seed, self.worker_index, self.user_index])
        self.info = self.client.zoo()
        self.client.use_endpoint(self.info.get("endpoint", "/v1/infer"))  # /v1/embed on an encoder zoo

    def on_stop(self):
        self.client.close()

    @classmethod
    def data(cls) -> Dataset:
        if PsmlUser._data is None:
            PsmlUser._data = Dataset.load(Path(SETTINGS.data_file))
        return PsmlUser._data


class BenignUser(PsmlUser):
    label = "benign"
    api_key = SETTINGS.benign_key
    wait_time = between(SETTINGS.think_min_s, SETTINGS.think_max_s)

    @task
    def classify(self):
        data = self.data()
        idx = benign_indices(self.rng, len(data.x["test"]), SETTINGS)
        req = benign_requirements(self.rng, self.info, SETTINGS)
        t0 = time.perf_counter()
        try:
            labels = self.client.answer(data.x["test"][idx], *req).get("labels")
        except RouterRejected:
            labels = None  # already reported to Locust as a failure; the audit log says why
        if self.info.get("endpoint", "/v1/infer") == "/v1/infer":  # classifier zoos answer labels
            _Latencies.useful.append(benign_answer(data.y["test"][idx], labels, (time.perf_counter() - t0) * 1e3,
                                                   req[1]))


class AttackerUser(PsmlUser):
    """Fingerprints the most accurate model (staircase), then spends its budget on extraction queries."""

    label = "attacker"
    api_key = SETTINGS.attacker_key
    wait_time = constant(0)

    def on_start(self):
        super().on_start()
        from attacks.oracle import SpecOracle

        pool = self.data().x["attacker_pool"]
        oracle = SpecOracle(self.client, pool[:1])
        self.fingerprint = staircase(oracle, self.info, FingerprintSettings())
        self.spec = self.fingerprint.spec or {}
        order = self.rng.permutation(len(pool) - 1)[: SETTINGS.attack_budget] + 1
        self.queue = [order[i : i + SETTINGS.attack_batch] for i in range(0, len(order), SETTINGS.attack_batch)]
        self.xs, self.ps = [], []

    @task
    def extract(self):
        if not self.queue:
            time.sleep(1.0)  # budget spent: idle until the shape stops this user
            return
        idx = self.queue.pop(0)
        x = self.data().x["attacker_pool"][idx]
        try:
            self.ps.append(self.client.infer(x, **self.spec))
            self.xs.append(x)
        except RouterRejected:
            pass
        if not self.queue:
            self.save()

    def save(self):
        out = Path(SETTINGS.out_dir)
        out.mkdir(parents=True, exist_ok=True)
        name = out / f"attacker-w{self.worker_index}-u{self.user_index}.npz"
        tmp = name.with_suffix(".tmp.npz")
        np.savez(tmp, x=np.concatenate(self.xs) if self.xs else np.zeros((0, 1), np.float32),
                 probs=np.concatenate(self.ps) if self.ps else np.zeros((0, 1), np.float32),
                 fingerprint_queries=self.fingerprint.queries, spec=str(self.spec))
        tmp.replace(name)
