"""Locust users. ``PsmlUser`` owns the router client and reports every call through Locust's request event
(as Locust's custom-client examples do); the concrete users only decide what to send.

Benign distribution (documented in the README): each request carries 1..benign_max_batch real test samples;
min_accuracy is uniform over the published accuracy range and max_latency_ms uniform over
[published min, benign_latency_slack x published max]; each is omitted with probability
benign_unconstrained_share. Think time is uniform in [think_min_s, think_max_s].
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from locust import User, between, constant, task

from attacks.fingerprint import FingerprintSettings, staircase
from psml.sut import RouterClient, RouterRejected
from zoo.data import Dataset

from .config import LoadSettings

SETTINGS = LoadSettings.from_env()


class ReportingRouterClient(RouterClient):
    """A RouterClient whose every call is reported to Locust under ``"<user class> <path>"``."""

    def __init__(self, url, api_key, events, label):
        super().__init__(url, api_key)
        self.events, self.label = events, label

    def request(self, method, path, body=None):
        t0 = time.perf_counter()
        status, answer, exc = 0, None, None
        try:
            status, answer = super().request(method, path, body)
            if status != 200:
                exc = RouterRejected(status, answer or {})
        except Exception as e:  # reported to Locust as a failure; the user carries on
            exc = e
        self.events.request.fire(request_type=method, name=f"{self.label} {path}",
                                 response_time=(time.perf_counter() - t0) * 1e3, response_length=0,
                                 exception=exc, context={})
        if exc is not None and not isinstance(exc, RouterRejected):
            raise exc
        return status, answer


class PsmlUser(User):
    abstract = True
    api_key = ""
    _data: Dataset | None = None

    def on_start(self):
        self.client = ReportingRouterClient(self.host, self.api_key, self.environment.events, self.label)
        self.rng = np.random.default_rng([SETTINGS.seed, id(self) % 2**31])  # per-user stream, from the run's seed
        self.info = self.client.zoo()

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

    def requirements(self) -> tuple[float | None, float | None]:
        (a_lo, a_hi), (l_lo, l_hi) = self.info["accuracy_range"], self.info["latency_range_ms"]
        skip = SETTINGS.benign_unconstrained_share
        acc = None if self.rng.random() < skip else float(self.rng.uniform(a_lo, a_hi))
        lat = None if self.rng.random() < skip else float(self.rng.uniform(l_lo, SETTINGS.benign_latency_slack * l_hi))
        return acc, lat

    @task
    def classify(self):
        x = self.data().x["test"]
        batch = x[self.rng.integers(0, len(x), int(self.rng.integers(1, SETTINGS.benign_max_batch + 1)))]
        try:
            self.client.infer(batch, *self.requirements())
        except RouterRejected:
            pass  # already reported to Locust as a failure; the audit log says why


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
        name = out / f"attacker-{id(self):x}.npz"
        tmp = name.with_suffix(".tmp.npz")
        np.savez(tmp, x=np.concatenate(self.xs) if self.xs else np.zeros((0, 1), np.float32),
                 probs=np.concatenate(self.ps) if self.ps else np.zeros((0, 1), np.float32),
                 fingerprint_queries=self.fingerprint.queries, spec=str(self.spec))
        tmp.replace(name)
