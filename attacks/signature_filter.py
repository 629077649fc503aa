"""Signature filtering: a probe row rides in every batch, and only batches the victim answered are kept.

Against: any randomised model selection (PSML's pareto_uniform policy and metric-noise defense, arXiv
2307.01292; the exponential mechanism of McSherry & Talwar, FOCS 2007, as in the PSML rework).
Idea: the router serves a whole batch with one model, and a model answers a fixed input the same way every
time (attacks/oracle.py ``signature``). So row 0 of every batch is the attacker's probe, whose answer under the
victim it learned while fingerprinting; a batch whose probe answer carries another signature came from another
model, and is discarded and its samples resent. Randomised selection then no longer spoils the transcript:
it only multiplies its cost, about 1 / P(victim) for the specification asked, plus one probe row per batch.
Every sample sent counts in the budget: probe rows, discarded batches and rejected requests.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

import numpy as np

from common.errors import ConfigError
from stack.clients import RouterRejected, SystemUnderTest

from .knockoff import rows_within_budget
from .oracle import signature

OUTCOMES = ("kept", "discarded", "rejected")  # of each request, in the order sent


@dataclass(frozen=True)
class SignatureFilterSettings:
    budget_samples: int = 1000  # rows sent in all, probe rows, discarded batches and rejected requests included
    batch_size: int = 25  # rows per request, the probe's included: batch_size - 1 attacker samples
    seed: int = 0  # which pool samples are sent, and in which order

    def __post_init__(self):
        if self.batch_size < 2:
            raise ConfigError(f"batch_size must be >= 2 (the probe row and at least one sample), got {self.batch_size}")
        if self.budget_samples < self.batch_size:
            raise ConfigError(f"budget_samples ({self.budget_samples}) must cover one batch of {self.batch_size} rows")

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class FilteredTranscript:
    """The kept answers (train_surrogate takes it as it takes knockoff's Transcript) and what they cost."""

    x: np.ndarray  # [answers_kept, D] pool samples whose batch the victim answered
    probs: np.ndarray  # [answers_kept, C] the victim's answers on them (probe rows left out)
    samples_sent: int = 0  # every row sent
    batches_sent: int = 0  # requests, rejected ones included
    batches_kept: int = 0
    answers_kept: int = 0
    rejected: int = 0  # requests the router refused (each still spent its rows)
    outcomes: list[str] = field(default_factory=list)  # per request, in the order sent: one of OUTCOMES
    request_ends: list[int] = field(default_factory=list)  # per request: rows sent once it had gone
    sent_at: np.ndarray | None = None  # per kept row: rows sent once its request had gone

    def up_to(self, budget: int) -> "FilteredTranscript":
        """What the same attacker held after ``budget`` rows (see knockoff.Transcript.up_to)."""
        n, keep = rows_within_budget(self.request_ends, self.sent_at, budget, len(self.x))
        out = self.outcomes[:n]
        return replace(self, x=self.x[keep], probs=self.probs[keep], samples_sent=self.request_ends[n - 1] if n else 0,
                       batches_sent=n, batches_kept=out.count("kept"), answers_kept=int(keep.sum()),
                       rejected=out.count("rejected"), outcomes=out, request_ends=self.request_ends[:n],
                       sent_at=self.sent_at[keep])

    @property
    def cost_multiplier(self) -> float:
        """Rows sent per answer kept (1.0: every row sent was a victim's answer on an attacker sample)."""
        return self.samples_sent / self.answers_kept if self.answers_kept else float("inf")

    def counters(self) -> dict:
        return {"samples_sent": self.samples_sent, "batches_sent": self.batches_sent,
                "batches_kept": self.batches_kept, "answers_kept": self.answers_kept, "rejected": self.rejected,
                "cost_multiplier": self.cost_multiplier}


def collect_filtered(sut: SystemUnderTest, pool: np.ndarray, probe: np.ndarray, target_signature: str,
                     s: SignatureFilterSettings, requirements: dict | None = None) -> FilteredTranscript:
    """Send [probe; next samples] until the budget cannot pay for another request or the pool is used up;
    keep a batch only when its probe answer carries ``target_signature``, else resend the same samples."""
    order = pool[np.random.default_rng(s.seed).permutation(len(pool))]
    t = FilteredTranscript(x=np.zeros((0, pool.shape[1]), np.float32), probs=np.zeros((0, 0), np.float32))
    xs, ps, at, start = [], [], [], 0
    while start < len(order) and s.budget_samples - t.samples_sent >= 2:
        x = order[start : start + min(s.batch_size, s.budget_samples - t.samples_sent) - 1]
        t.samples_sent += 1 + len(x)
        t.batches_sent += 1
        t.request_ends.append(t.samples_sent)
        try:
            probs = sut.infer(np.concatenate([probe, x]), **(requirements or {}))
        except RouterRejected:
            t.rejected += 1
            t.outcomes.append("rejected")
            continue
        if signature(probs[0]) != target_signature:
            t.outcomes.append("discarded")
            continue
        t.outcomes.append("kept")
        t.batches_kept += 1
        xs.append(x)
        ps.append(probs[1:])
        at.append(np.full(len(x), t.samples_sent))
        start += len(x)
    t.sent_at = np.concatenate(at) if at else np.zeros(0, np.int64)
    if xs:
        t.x, t.probs = np.concatenate(xs), np.concatenate(ps)
    t.answers_kept = len(t.x)
    return t
