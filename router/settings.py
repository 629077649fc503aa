"""Router settings: one JSON file per deployment, validated strictly (unknown keys and bad values raise)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from common.errors import ConfigError


class RouterSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    zoo: str = "model_repository/default"  # folder holding the zoo's manifest (zoo.json)
    triton_http_url: str = "127.0.0.1:8000"
    triton_grpc_url: str = "127.0.0.1:8001"
    triton_protocol: Literal["http", "grpc"] = "http"  # http: binary tensors, ~1/5 the client CPU of gRPC (measured)
    backend: Literal["triton", "null"] = "triton"  # null: answer uniform probabilities without Triton (overhead runs)
    # Router processes behind one port (a supervisor restarts any that dies). Above the machine's cores only
    # with allow_more_workers_than_cores: on a machine shared with Triton and clients, more would only queue.
    workers: int = Field(1, ge=1)
    allow_more_workers_than_cores: bool = False
    # Admission control, per worker: requests in flight above these bounds are answered at once, 503 (this
    # worker's bound) or 429 (the client's), with Retry-After; null = unbounded.
    max_in_flight: int | None = Field(64, ge=1)
    # Default: a quarter of max_in_flight (at least 1), so that one key cannot take every slot; null: no bound.
    max_in_flight_per_client: int | None = Field(16, ge=1)
    # A request's body must arrive within body_timeout_ms of its headers, and headers within header_timeout_ms
    # of the connection opening (or of the previous answer on a kept-alive connection); otherwise 408 / closed.
    # Admission is taken only once the body is in: a slow client costs a connection, never a slot.
    body_timeout_ms: float = Field(5000.0, gt=0)
    header_timeout_ms: float = Field(5000.0, gt=0)
    # Open connections per worker, in all and per client address (over either: 503 and closed at once). The
    # bound in all is kept below the process's file-descriptor limit, which the router raises to its hard limit.
    max_connections: int = Field(4096, ge=1)
    max_connections_per_ip: int = Field(1024, ge=1)
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)  # 0 = pick a free port
    api_keys: dict[str, str] = Field(min_length=1)  # API key -> client name (recorded in the audit log)
    policy: str = "pareto_uniform"
    defenses: list[dict] = []  # e.g. [{"name": "metric_noise", "distribution": "laplace", "accuracy_scale": 0.02}]
    on_no_model: str = "reject"  # reject: 422 with the reason; closest: serve the model that falls least short
    # Seeds the policy's and every defense's random stream. null (the default): fresh OS entropy at start, so a
    # deployment's draws cannot be predicted from the public code; the seed used is written into every audit
    # record. Experiments give one to replay a run.
    seed: int | None = Field(None, ge=0, lt=2**63)
    max_batch_size: int = Field(256, ge=1)
    max_body_bytes: int = Field(4 * 1024 * 1024, ge=1024)
    request_timeout_ms: float = Field(5000.0, gt=0)  # per forwarded Triton call
    audit_log: str = "runs/audit.jsonl"
    # Profiling only: honour the x-psml-model header that names the model to serve (psml zoo build/validate
    # measure each model end to end through the router). Off in every deployment: it would let a client skip
    # selection and every defense.
    allow_pinned_model: bool = False
    audit_fsync: bool = False  # True: fsync every record (survives power loss, costs ~ms per request)
    # /metrics names every client and counts, per client, requests served by a model that met what they asked:
    # an oracle for an attacker and a client list for anyone. It is served on its own listener
    # (metrics_host:metrics_port, loopback by default; 0 = a free port) and/or to holders of metrics_token
    # (Authorization: Bearer); with neither set, /metrics is off (404).
    metrics_port: int | None = Field(None, ge=0, le=65535)
    metrics_host: str = "127.0.0.1"
    metrics_token: str | None = Field(None, min_length=16)
    # Per-client state (query_budget, prada, b4b, max_in_flight_per_client) in a Redis-protocol store
    # ("redis://host:port/db", e.g. psml store start) shared by every worker and router, kept across restarts;
    # null: in this process, one worker only. Store unreachable: 503 state_store_unavailable (fail closed), or
    # with state_store_fail_open served without the per-client defenses, recorded in the audit log.
    state_store: str | None = Field(None, pattern=r"^rediss?://[^\s]+$")
    state_store_fail_open: bool = False
    state_store_connect_timeout_ms: float = Field(50.0, gt=0)  # a store host that is gone costs a request this
    state_store_socket_timeout_ms: float = Field(200.0, gt=0)  # a store that hangs mid-answer costs this
    state_store_retry_ms: float = Field(500.0, gt=0)  # after a failure, answer without asking for this long
    # A slot in flight is a lease: a router that dies holding it frees it after this long (not before the
    # longest a request may take, so a live request never loses its slot)
    state_store_slot_lease_ms: float = Field(60000.0, gt=0)
    state_store_prefix: str = Field("psml", pattern=r"^[A-Za-z0-9_.:-]{1,64}$")  # deployments sharing one store
    # A refusal that lasts (a PRADA flag, a spent budget) is remembered by the worker this long, refusing the key
    # before its body is read with no round trip; then the store is asked again, so a key an operator cleared
    # there is served again within it
    state_store_recheck_ms: float = Field(5000.0, gt=0)
    # Budget leases: where query_budget is all that admission decides (max_in_flight_per_client null, PRADA off or
    # log, no B4B), a worker takes a key's samples from the store in chunks of up to this many (fewer as the key's
    # budget, burst or tokens run low) and admits from them with no round trip; each lease lasts
    # state_store_budget_lease_ms, then its unused samples go back. 0: every request asks the store.
    state_store_budget_lease_samples: int = Field(64, ge=0)
    state_store_budget_lease_ms: float = Field(250.0, gt=0, le=5000)
    # PRADA under log: a key's batches on a worker go to the store together, one commit when the first of them is
    # this old (or at once: when they hold state_store_prada_commit_samples samples, one raised the flag, or
    # another worker wrote the key lately; throttle and block never wait). Other workers see the key's newest
    # batches up to this much later; a worker killed (not stopped) loses at most this much of its keys' batches
    # from the detector. 0: a commit with every request.
    state_store_prada_commit_ms: float = Field(20.0, ge=0, le=1000)
    state_store_prada_commit_samples: int = Field(256, ge=1)
    # Held slots: where admission decides only the slot and the budget (PRADA off or log, no B4B; with
    # query_budget only with budget leases on), a worker keeps a key's slot (max_in_flight_per_client) this long
    # after the key's request ended, for the key's next request there with no round trip. Held slots count as
    # in flight in the store; a held slot serves one second at most, so a key spread over workers may be refused
    # up to about a second early (docs/router.md). 0: every request takes and releases its slot in the store.
    state_store_slot_hold_ms: float = Field(20.0, ge=0, le=1000)

    @model_validator(mode="after")
    def _defenses_combine(self):
        from .defenses import check_combination, make_defense  # ConfigError is a ValueError: pydantic reports it

        check_combination([make_defense(d) for d in self.defenses], workers=self.workers,
                          shared_state=self.state_store is not None)
        return self

    @model_validator(mode="after")
    def _lease_outlives_a_request(self):
        longest_ms = self.body_timeout_ms + self.request_timeout_ms
        if self.state_store is not None and self.state_store_slot_lease_ms < longest_ms:
            raise ValueError(f"state_store_slot_lease_ms ({self.state_store_slot_lease_ms:g}) is shorter than a "
                             f"request may take (body_timeout_ms + request_timeout_ms = {longest_ms:g}): a live "
                             "request would lose its slot")
        return self

    @model_validator(mode="before")
    @classmethod
    def _default_client_bound(cls, data):
        if isinstance(data, dict) and "max_in_flight_per_client" not in data:
            m = data.get("max_in_flight", 64)
            data = data | {"max_in_flight_per_client": max(1, m // 4) if isinstance(m, int) and m >= 1 else None}
        return data

    @model_validator(mode="after")
    def _client_bound_below_router_bound(self):
        m, c = self.max_in_flight, self.max_in_flight_per_client
        if m is not None and c is not None and c > m:
            raise ValueError(f"max_in_flight_per_client ({c}) exceeds max_in_flight ({m}): one client could take "
                             "every slot; lower it or set it to null on purpose")
        return self

    @model_validator(mode="after")
    def _workers_fit_the_machine(self):
        cores = len(os.sched_getaffinity(0))  # the cores this process may run on
        if self.workers > cores and not self.allow_more_workers_than_cores:
            raise ValueError(f"{self.workers} workers exceed this machine's {cores} cores; "
                             "set allow_more_workers_than_cores to run them anyway")
        return self


def load_settings(path: Path, **overrides) -> RouterSettings:
    try:
        raw = Path(path).read_text()
    except OSError as e:
        raise ConfigError(f"router settings {path} cannot be read ({e.strerror})") from e
    try:
        base = RouterSettings.model_validate_json(raw)
        return base.model_copy(update={k: v for k, v in overrides.items() if v is not None}) if overrides else base
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(map(str, first["loc"])) or "settings"
        raise ConfigError(f"router settings {path}: {where}: {first['msg'].removeprefix('Value error, ')}") from e
