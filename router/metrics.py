"""Prometheus metrics of one router, fed from the same records the audit log gets (one registry per router)."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from .goodput import COUNTED, is_good, latency_met

LATENCY_BUCKETS_S = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class RouterMetrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self):
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("psml_requests", "Requests by client and outcome", ["client", "outcome"], registry=r)
        self.good = Counter("psml_good_requests", "Requests answered by a model meeting the original requirements "
                            "within the latency bound", ["client"], registry=r)
        self.slo = Counter("psml_slo_met_requests", "Requests answered within max_latency_ms", ["client"], registry=r)
        self.goodput = Gauge("psml_goodput_ratio", "good / counted requests since start", ["client"], registry=r)
        self.latency = Histogram("psml_router_latency_seconds", "Router end-to-end latency", buckets=LATENCY_BUCKETS_S,
                                 registry=r)
        self._counted: dict[str, list[int]] = {}

    def observe(self, rec: dict) -> None:
        client = rec["client"] or "(anonymous)"
        self.requests.labels(client, rec["outcome"]).inc()
        self.latency.observe(rec["router_ms"] / 1e3)
        if rec["outcome"] not in COUNTED:
            return
        good = is_good(rec)
        if good:
            self.good.labels(client).inc()
        if rec["outcome"] == "served" and latency_met(rec):
            self.slo.labels(client).inc()
        for key in (client, "overall"):
            tally = self._counted.setdefault(key, [0, 0])
            tally[0] += good
            tally[1] += 1
            self.goodput.labels(key).set(tally[0] / tally[1])

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
