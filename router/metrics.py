"""Prometheus metrics of one router, fed from the same records the audit log gets.

With several workers (``PROMETHEUS_MULTIPROC_DIR`` set by the supervisor before any worker starts),
prometheus-client's multiprocess mode keeps each worker's values in files and a scrape of any worker sums
them, so ``/metrics`` describes the whole router whichever worker answers. The goodput ratio is derived at
scrape time from the summed counters (a per-worker ratio could not be summed).
"""

from __future__ import annotations

import os

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily

from .goodput import COUNTED, is_good, latency_met

LATENCY_BUCKETS_S = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


class _Goodput:
    """A collector: every source family as it is, plus psml_goodput_ratio{client} = good / counted."""

    def __init__(self, source: CollectorRegistry):
        self.source = source

    def collect(self):
        totals: dict[str, dict[str, float]] = {"good": {}, "counted": {}}
        for family in self.source.collect():
            yield family
            kind = {"psml_good_requests": "good", "psml_counted_requests": "counted"}.get(family.name)
            if kind is None:
                continue
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    client = sample.labels["client"]
                    totals[kind][client] = totals[kind].get(client, 0.0) + sample.value
        ratio = GaugeMetricFamily("psml_goodput_ratio", "good / counted requests since the router started, "
                                  "over all its workers", labels=["client"])
        counted, good = totals["counted"], totals["good"]
        for client in sorted(counted):
            ratio.add_metric([client], good.get(client, 0.0) / counted[client] if counted[client] else 0.0)
        if counted:
            ratio.add_metric(["overall"], sum(good.values()) / sum(counted.values()))
        yield ratio


class RouterMetrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self):
        self.multiprocess = bool(os.environ.get(MULTIPROC_ENV))
        # multiprocess mode: metrics live in the process-wide default registry's files, read back at scrape
        r = None if self.multiprocess else CollectorRegistry()
        kw = {} if self.multiprocess else {"registry": r}
        self.registry = r
        self.requests = Counter("psml_requests", "Requests by client and outcome", ["client", "outcome"], **kw)
        self.counted = Counter("psml_counted_requests", "Requests that count towards goodput", ["client"], **kw)
        self.good = Counter("psml_good_requests", "Requests answered by a model meeting the original requirements "
                            "within the latency bound", ["client"], **kw)
        self.slo = Counter("psml_slo_met_requests", "Requests answered within max_latency_ms", ["client"], **kw)
        self.latency = Histogram("psml_router_latency_seconds", "Router end-to-end latency", buckets=LATENCY_BUCKETS_S,
                                 **kw)
        self._cache: dict[tuple[str, str], tuple] = {}

    def _children(self, client: str, outcome: str) -> tuple:
        # labels() hashes and validates its arguments on every call; the children are cached per (client, outcome)
        key = (client, outcome)
        found = self._cache.get(key)
        if found is None:
            found = self._cache[key] = (self.requests.labels(client, outcome), self.counted.labels(client),
                                        self.good.labels(client), self.slo.labels(client))
        return found

    def observe(self, rec: dict) -> None:
        requests, counted, good, slo = self._children(rec["client"] or "(anonymous)", rec["outcome"])
        requests.inc()
        self.latency.observe(rec["router_ms"] / 1e3)
        if rec["outcome"] not in COUNTED:
            return
        counted.inc()
        if is_good(rec):
            good.inc()
        if rec["outcome"] == "served" and latency_met(rec):
            slo.inc()

    def exposition(self) -> bytes:
        if self.multiprocess:
            from prometheus_client import multiprocess

            source = CollectorRegistry()
            multiprocess.MultiProcessCollector(source)
        else:
            source = self.registry
        out = CollectorRegistry(auto_describe=False)
        out.register(_Goodput(source))
        return generate_latest(out)
