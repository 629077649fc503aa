"""The timing side channel: tell which zoo model answered from the response time alone.

Each zoo model takes its own time, so the time an answer takes is itself a fingerprint, and it survives every
output perturbation (labels_only, rounding, noise) because it never looks at the output. Two steps, both
through the public API only:
1. templates: the staircase (attacks/fingerprint.py) finds, from 200/422 answers alone, one specification per
   front rank (its corners); the attacker times ``template_queries`` answers at each corner: rank k's template;
2. identification: given m timing samples of answers from one unknown model, the attacker names the rank whose
   template median is nearest the samples' median, in log time (latencies are right-skewed and the zoo's tiers
   are roughly geometric). m = 1 identifies a single answer; larger m is the adaptive attacker against noise or
   padding, which pays for the extra samples in queries.
With ``pool`` (run_timing) every query sends the next natural sample instead of one fixed probe, which costs
nothing here since neither step reads an output: the variant fielded against a per-client detector (PRADA
flags a repeated probe at its first test; on the default zoo it flags this stream too, a little later).
The harness (``identification_accuracy``) scores it against the audit log's record of the model that served.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import numpy as np

from common.errors import ConfigError
from stack.clients import RouterClient, RouterRejected


@dataclass(frozen=True)
class TimingSettings:
    template_queries: int = 60  # timed answers per front rank for its template
    test_queries: int = 120  # timed answers per rank the harness scores identification on
    samples: tuple[int, ...] = (1, 3, 10, 30)  # timing samples per identification (m)
    trials: int = 300  # identifications drawn per m
    seed: int = 0
    # samples per request: large batches take each model far longer than the padding floor of a batch of 1,
    # so padding that holds at batch 1 can leave batch-256 answers unpadded and told apart
    batch_size: int = 1

    def __post_init__(self):
        if self.template_queries < 1 or self.test_queries < 1 or self.trials < 1:
            raise ConfigError("template_queries, test_queries and trials must be >= 1")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")
        if not self.samples or min(self.samples) < 1:
            raise ConfigError(f"samples must be counts >= 1, got {self.samples}")

    def as_dict(self) -> dict:
        return asdict(self)


def timed_answers(client: RouterClient, inputs: np.ndarray, spec: dict, n: int,
                  start: int = 0, batch_size: int = 1) -> list[tuple[float, str]]:
    """(wall ms at the client, request id) of up to n answered requests with ``spec`` (rejections are skipped);
    request i sends ``batch_size`` rows from row (start + i) mod len(inputs) of ``inputs`` on, wrapping: one row
    is a fixed probe, many a natural stream (a zoo model's time does not depend on what the sample shows)."""
    out = []
    for i in range(n):
        x = inputs[np.arange(start + i, start + i + batch_size) % len(inputs)]
        t0 = time.perf_counter()
        try:
            answer = client.answer(x, spec.get("min_accuracy"), spec.get("max_latency_ms"))
        except RouterRejected:
            continue
        out.append(((time.perf_counter() - t0) * 1e3, answer["request_id"]))
    return out


def templates(times_by_rank: dict[int, np.ndarray]) -> dict[int, float]:
    """Rank -> median log time of its template answers."""
    return {k: float(np.median(np.log(t))) for k, t in times_by_rank.items() if len(t)}


def identify(sample_ms: np.ndarray, template_medians: dict[int, float]) -> int:
    """The rank whose template median is nearest the sample's median log time."""
    m = float(np.median(np.log(sample_ms)))
    return min(template_medians, key=lambda k: abs(template_medians[k] - m))


def identification_accuracy(template_medians: dict[int, float], test_by_rank: dict[int, np.ndarray],
                            s: TimingSettings) -> dict[int, float]:
    """Per m: the share of ``trials`` identifications that name the true rank, each from m samples drawn (with
    replacement) from the test answers truly served by one rank, the rank drawn uniformly."""
    rng = np.random.default_rng(s.seed)
    ranks = [k for k, t in test_by_rank.items() if len(t)]
    if not ranks:  # no test answer came back (e.g. the key was blocked): nothing to score
        return {m: None for m in s.samples}
    out = {}
    for m in s.samples:
        hits = 0
        for _ in range(s.trials):
            k = ranks[int(rng.integers(len(ranks)))]
            hits += identify(rng.choice(test_by_rank[k], m), template_medians) == k
        out[m] = hits / s.trials
    return out
