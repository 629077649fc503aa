"""Knockoff-style model extraction through a serving API.

Paper: Orekondy et al., "Knockoff Nets: Stealing Functionality of Black-Box Models", CVPR 2019.
The attacker sends ``budget`` samples from its query pool (in batches of ``batch_size`` per request), keeps
the returned probabilities (or only the top-1 labels), and trains a surrogate of its own architecture on them.
Scored on the held-out test set: accuracy against the true labels, and fidelity = agreement with the
victim's top-1 labels.
"""

from __future__ import annotations

import bisect
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import torch

from common.errors import ConfigError
from stack.clients import RouterRejected, SystemUnderTest
from zoo.architectures import ARCHITECTURES, build_model
from zoo.train import TrainSettings, predict_proba, train

# Query budgets in samples (the attacker pool of the default zoo holds 3,600).
BUDGETS = {"small": 250, "medium": 1000, "large": 3000}
# A surrogate whose training failed is retried this many times with a fresh initialisation (same transcript).
SURROGATE_RETRIES = 2


def resolve_budget(budget: str | int | float, pool_size: int) -> int:
    """A budget as samples: a name (small, medium, large), a count ("600") or a fraction of the pool ("0.25").
    Checked against the pool before the first query is sent."""
    text = str(budget)
    if text in BUDGETS:
        n = BUDGETS[text]
    else:
        try:
            value = float(text)
        except ValueError:
            raise ConfigError(f"budget {text!r} is neither a name ({', '.join(BUDGETS)}), a sample count nor a "
                              f"fraction of the pool") from None
        if 0 < value < 1:
            n = max(1, int(round(value * pool_size)))
        elif value >= 1 and value == int(value):
            n = int(value)
        else:
            raise ConfigError(f"budget {text!r}: a sample count must be a whole number >= 1, a fraction in (0, 1)")
    if n > pool_size:
        raise ConfigError(f"budget {text!r} ({n} samples) exceeds the query pool of {pool_size}")
    return n


def training_failure(losses: list[float], accuracy: float, n_classes: int) -> str | None:
    """Why a trained surrogate counts as failed, or None: test accuracy at or below 1.5x chance (a surrogate that
    learnt nothing, not a weak one), or a loss that did not fall by 2% from the first epoch to the last."""
    chance = 1.0 / n_classes
    if accuracy <= 1.5 * chance:
        return f"accuracy {accuracy:.3f} at or below 1.5x chance ({chance:.3f})"
    if len(losses) >= 2 and not losses[-1] < 0.98 * losses[0]:
        return f"training loss did not fall ({losses[0]:.4f} -> {losses[-1]:.4f})"
    return None


@dataclass(frozen=True)
class KnockoffSettings:
    budget: int = BUDGETS["medium"]  # samples sent to the victim
    batch_size: int = 25  # samples per request
    surrogate: str = "cnn_large"  # the attacker's architecture (any of zoo.architectures)
    epochs: int = 40
    learning_rate: float = 3e-3
    labels_only: bool = False  # True: train on top-1 labels only, as against an output-perturbation defense
    resend_rejected: int = 0  # resend a rejected request up to this many times (a fresh noise draw may serve it)
    seed: int = 0  # which pool samples are sent, and the surrogate's initialisation and shuffling

    def __post_init__(self):
        if self.budget < 1 or self.batch_size < 1 or self.epochs < 1:
            raise ConfigError("budget, batch_size and epochs must all be >= 1")
        if self.resend_rejected < 0:
            raise ConfigError(f"resend_rejected must be >= 0, got {self.resend_rejected}")
        if self.surrogate not in ARCHITECTURES:
            raise ConfigError(f"unknown surrogate architecture {self.surrogate!r}; choose from {', '.join(ARCHITECTURES)}")

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class Transcript:
    """What the attacker collected: inputs it sent and answers it got (rejected requests spend budget too)."""

    x: np.ndarray
    probs: np.ndarray
    requests: int
    rejected_requests: int
    samples_sent: int = 0  # every sample sent, rejected and resent ones included: what the budget counts
    # per request in the order sent: samples sent once it had gone, and whether it was answered or rejected;
    # with them ``up_to`` cuts the transcript an attacker stopping at a smaller budget would hold
    request_ends: list[int] = field(default_factory=list)
    outcomes: list[str] = field(default_factory=list)
    sent_at: np.ndarray | None = None  # per kept row: samples sent once its request had gone

    def up_to(self, budget: int) -> "Transcript":
        """What the same attacker held after ``budget`` samples: the requests sent up to then. Exact for a
        budget sweep from one collection: the router's per-client state (a budget, a PRADA flag) evolved the
        same way up to that point, and the pool draw is the same stream."""
        n, keep = rows_within_budget(self.request_ends, self.sent_at, budget, len(self.x))
        return replace(self, x=self.x[keep], probs=self.probs[keep], requests=n,
                       rejected_requests=self.outcomes[:n].count("rejected"),
                       samples_sent=self.request_ends[n - 1] if n else 0, request_ends=self.request_ends[:n],
                       outcomes=self.outcomes[:n], sent_at=None if self.sent_at is None else self.sent_at[keep])


def rows_within_budget(request_ends: list[int], sent_at: np.ndarray | None, budget: int, rows: int) -> tuple[int, np.ndarray]:
    """Requests whose samples all went within ``budget``, and the mask of kept rows among them."""
    if sent_at is None or len(sent_at) != rows:
        raise ConfigError("this transcript did not record when its rows were sent: it cannot be cut to a budget")
    n = bisect.bisect_right(request_ends, budget)
    return n, sent_at <= budget


def collect(sut: SystemUnderTest | list[SystemUnderTest], pool: np.ndarray, s: KnockoffSettings,
            requirements: dict | None = None) -> Transcript:
    """Spend the budget: ``s.budget`` samples sent in all, rejected and resent ones included (an attacker that
    resends for free would not be judged at the same budget as one that does not). ``sut`` may be a list (one
    client per API key): requests rotate over them, the adaptive attacker's answer to per-key limits. A request
    still refused after its resends is given up; the last request is cut to what the budget has left."""
    if s.budget > len(pool):  # callers check budgets up front (resolve_budget); this guards direct use
        raise ConfigError(f"budget of {s.budget} samples exceeds the query pool of {len(pool)}")
    suts = sut if isinstance(sut, list) else [sut]
    idx = np.random.default_rng(s.seed).choice(len(pool), s.budget, replace=False)
    xs, ps, requests, rejected, sent = [], [], 0, 0, 0
    ends, outcomes, at = [], [], []
    for i, start in enumerate(range(0, s.budget, s.batch_size)):
        for _ in range(1 + s.resend_rejected):
            x = pool[idx[start : start + min(s.batch_size, s.budget - sent)]]
            if len(x) == 0:
                break
            requests += 1
            sent += len(x)
            ends.append(sent)
            try:
                ps.append(suts[i % len(suts)].infer(x, **(requirements or {})))
                xs.append(x)
                at.append(np.full(len(x), sent))
                outcomes.append("answered")
                break
            except RouterRejected:
                rejected += 1
                outcomes.append("rejected")
        if sent >= s.budget:
            break
    n_classes = ps[0].shape[1] if ps else 0
    return Transcript(np.concatenate(xs) if xs else np.zeros((0, pool.shape[1]), np.float32),
                      np.concatenate(ps) if ps else np.zeros((0, n_classes), np.float32), requests, rejected, sent,
                      ends, outcomes, np.concatenate(at) if at else np.zeros(0, np.int64))


def train_surrogate(t: Transcript, sample_shape, n_classes: int, s: KnockoffSettings,
                    losses: list[float] | None = None, init_seed: int | None = None) -> torch.nn.Module:
    if len(t.x) == 0:
        raise ConfigError("the attacker collected no answers: every request was rejected")
    seed = s.seed if init_seed is None else init_seed
    model = build_model(s.surrogate, sample_shape, n_classes, seed=seed)
    targets = t.probs.argmax(1).astype(np.int64) if s.labels_only else t.probs.astype(np.float32)
    train(model, t.x.astype(np.float32), targets,
          TrainSettings(epochs=s.epochs, batch_size=64, learning_rate=s.learning_rate, seed=seed), losses=losses)
    return model


def train_and_score(t: Transcript, sample_shape, n_classes: int, s: KnockoffSettings, x_test, y_test,
                    victim_labels, log=print) -> dict:
    """Train, score, and check the training: a failed surrogate (``training_failure``) is retried up to
    SURROGATE_RETRIES times with a fresh initialisation, each reason logged and kept. The result says how many
    attempts it took and, if every attempt failed, ``failed`` with the reasons: callers report it, never
    average it in."""
    reasons = []
    for attempt in range(1 + SURROGATE_RETRIES):
        losses: list[float] = []
        sur = train_surrogate(t, sample_shape, n_classes, s, losses, init_seed=s.seed + 1000 * attempt)
        scored = score(sur, x_test, y_test, victim_labels)
        reason = training_failure(losses, scored["accuracy"], n_classes)
        out = scored | {"attempts": attempt + 1, "retry_reasons": reasons, "final_loss": losses[-1] if losses else None}
        if reason is None:
            return out | {"failed": False}
        reasons.append(f"attempt {attempt + 1}: {reason}")
        log(f"  surrogate training failed (seed {s.seed}, {reasons[-1]}); "
            + ("retrying with a fresh initialisation" if attempt < SURROGATE_RETRIES else "giving up"))
    return out | {"failed": True}


def score(surrogate: torch.nn.Module, x_test: np.ndarray, y_test: np.ndarray, victim_labels: np.ndarray) -> dict:
    pred = predict_proba(surrogate, x_test).argmax(1)
    return {"accuracy": float(np.mean(pred == y_test)), "fidelity": float(np.mean(pred == victim_labels))}
