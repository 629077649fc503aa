"""Locust users for routers that share per-client state in one store (benchmarks/state_store_locust.py): every
key sends its requests alternately through all routers, so only state kept in the store can hold.

- ``BenignUser``: one key per user, natural test samples (a per-key permutation: no sample repeated, so PRADA
  sees the natural stream it was designed for), benign requirements (loadtests/benign.py), think time.
- ``AttackerUser``: the users share one key and one pass over the attacker pool; each asks until the query
  budget refuses it, halving its batch on every budget refusal down to 1, so its last refusal (a batch of 1)
  means the budget is spent to the last sample.
- ``SyntheticUser``: one key sending a JBDA-like stream (each request one small signed step of every seed, as
  tests/router/test_client_defenses.py ``jbda_like``) until every router has refused it twice (or its budget
  is spent).

``locust -f loadtests/shared_state_locustfile.py`` with the PSML_SS_* settings (loadtests/shared_state_config.py).
"""

from __future__ import annotations

import itertools
from pathlib import Path

import gevent
import numpy as np
from locust import LoadTestShape, User, between, constant, task

from stack.clients import RouterRejected
from zoo.data import Dataset

from loadtests.benign import benign_requirements
from loadtests.config import LoadSettings
from loadtests.shared_state_config import SharedStateLoad, api_keys
from loadtests.users import ReportingRouterClient

SETTINGS = SharedStateLoad.from_env()
KEYS = {name: key for key, name in api_keys(SETTINGS.benign_keys).items()}
IDLE_S = 0.5  # a user that is done waits this long between looks at the clock


class TwoRouterUser(User):
    """A user holding one client per router and taking them in turn, starting at its own number."""

    abstract = True
    label = ""
    _data: Dataset | None = None

    def on_start(self):
        self.number = next(self.numbers)
        self.key = self.api_key()
        self.clients = [ReportingRouterClient(url, self.key, self.environment.events, self.label)
                        for url in SETTINGS.urls]
        self.turn = self.number
        self.rng = np.random.default_rng([SETTINGS.seed, self.stream, self.number])
        self.done = False

    def on_stop(self):
        for c in self.clients:
            c.close()

    def next_client(self) -> tuple[int, ReportingRouterClient]:
        i = self.turn % len(self.clients)
        self.turn += 1
        return i, self.clients[i]

    @classmethod
    def data(cls) -> Dataset:
        if TwoRouterUser._data is None:
            TwoRouterUser._data = Dataset.load(Path(SETTINGS.data_file))
        return TwoRouterUser._data


class BenignUser(TwoRouterUser):
    label, stream, numbers = "benign", 1, itertools.count()
    fixed_count = SETTINGS.benign_keys
    wait_time = between(SETTINGS.think_min_s, SETTINGS.think_max_s)

    def api_key(self) -> str:
        return KEYS[f"benign-{self.number}"]

    def on_start(self):
        super().on_start()
        self.info = self.clients[0].zoo()
        self.order, self.cursor = self.rng.permutation(len(self.data().x["test"])), 0
        self.population = LoadSettings()  # the documented benign requirements

    @task
    def classify(self):
        n = int(self.rng.integers(1, SETTINGS.benign_max_batch + 1))
        if self.cursor + n > len(self.order):  # the whole test set sent: a fresh pass
            self.order, self.cursor = self.rng.permutation(len(self.order)), 0
        idx = self.order[self.cursor: self.cursor + n]
        self.cursor += n
        try:
            self.next_client()[1].answer(self.data().x["test"][idx], *benign_requirements(self.rng, self.info,
                                                                                           self.population))
        except RouterRejected:
            pass  # reported to Locust; the audit logs say why


class AttackerUser(TwoRouterUser):
    label, stream, numbers = "attacker", 2, itertools.count()
    fixed_count = SETTINGS.attacker_users
    wait_time = constant(0)
    order: np.ndarray | None = None  # one pass over the pool, shared by the key's users
    pool_cursor = 0

    def api_key(self) -> str:
        return KEYS["attacker"]

    def on_start(self):
        super().on_start()
        self.batch = SETTINGS.attack_batch
        if AttackerUser.order is None:
            pool = len(self.data().x["attacker_pool"])
            AttackerUser.order = np.random.default_rng([SETTINGS.seed, self.stream]).permutation(pool)

    @task
    def extract(self):
        if self.done:
            gevent.sleep(IDLE_S)
            return
        start = AttackerUser.pool_cursor % len(self.order)
        AttackerUser.pool_cursor += self.batch
        x = self.data().x["attacker_pool"][self.order[start: start + self.batch]]
        try:
            self.next_client()[1].answer(x)
        except RouterRejected as e:
            error = e.body.get("error")
            if error == "query_budget_exhausted" and self.batch > 1:
                self.batch //= 2
            elif error in ("query_budget_exhausted", "blocked"):
                self.done = True  # a batch of 1 refused: not one sample left (or PRADA blocked the key)


class SyntheticUser(TwoRouterUser):
    label, stream, numbers = "synthetic", 3, itertools.count()
    fixed_count = 1
    wait_time = constant(0)

    def api_key(self) -> str:
        return KEYS["synthetic"]

    def on_start(self):
        super().on_start()
        self.current = self.data().x["attacker_pool"][-SETTINGS.synthetic_batch:].astype(np.float32)
        self.refusals = [0] * len(self.clients)

    @task
    def step(self):
        if self.done:
            gevent.sleep(IDLE_S)
            return
        self.current = self.current + SETTINGS.synthetic_step * np.sign(self.rng.normal(size=self.current.shape))
        router, client = self.next_client()
        try:
            client.answer(self.current.astype(np.float32))
        except RouterRejected as e:
            if e.body.get("error") == "blocked":
                self.refusals[router] += 1
                self.done = min(self.refusals) >= 2
            elif e.status == 403:
                self.done = True  # its budget spent before PRADA flagged it: nothing more to learn


class WholeRun(LoadTestShape):
    """Every user from the start (fixed counts) for ``duration_s``, then stop."""

    def tick(self):
        users = SETTINGS.benign_keys + SETTINGS.attacker_users + 1
        return (users, float(users)) if self.get_run_time() < SETTINGS.duration_s else None
