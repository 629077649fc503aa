"""Direct extraction of a self-supervised encoder through an API that returns representations.

Paper: Dziedzic et al., "On the Difficulty of Defending Self-Supervised Learning against Model Extraction",
ICML 2022 (seed 003): query the victim with the attacker's own samples, keep the returned embeddings and train a
local encoder to reproduce them, with one of three losses:
- ``mse``: squared distance between the stolen and the returned embedding of each sample;
- ``infonce``: contrastive; each stolen embedding's positive is the victim's embedding of the same sample, the
  victim's embeddings of the other samples in the batch are its negatives (cosine similarity / temperature);
- ``softnn``: soft nearest neighbours (Frosst et al. 2019) over the stolen and returned embeddings together, the
  two embeddings of one sample forming a class: pulls each towards its counterpart, away from the rest.
Queries go out exactly as for Knockoff (attacks/knockoff.collect: budget, batches, requirements, resends).
Scored downstream, as the victim's own "accuracy" is: a linear probe on the stolen encoder's representations of
the labelled victim_train split, its test accuracy, and its agreement with the victim's probe on the test split;
also the cosine similarity of stolen and victim embeddings on the test split, and queries / the victim's
training set size (the seed's "fewer than 1/5 of its training queries").
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from common.errors import ConfigError
from zoo.architectures import ARCHITECTURES, build_model
from zoo.ssl import embed, fit_probe
from zoo.train import run_epochs

from .knockoff import KnockoffSettings, Transcript, collect

LOSSES = ("mse", "infonce", "softnn")


@dataclass(frozen=True)
class EncoderExtractionSettings:
    budget: int = 1000  # samples sent to the victim
    batch_size: int = 25  # samples per request
    loss: str = "mse"
    surrogate: str = "cnn_large"  # the attacker's encoder (any of zoo.architectures), output width = the victim's
    epochs: int = 60
    learning_rate: float = 1e-3
    temperature: float = 0.1  # infonce and softnn
    train_batch_size: int = 64
    resend_rejected: int = 0
    seed: int = 0

    def __post_init__(self):
        if self.loss not in LOSSES:
            raise ConfigError(f"unknown encoder-extraction loss {self.loss!r}; choose from {', '.join(LOSSES)}")
        if self.surrogate not in ARCHITECTURES:
            raise ConfigError(f"unknown surrogate architecture {self.surrogate!r}; choose from {', '.join(ARCHITECTURES)}")
        if self.budget < 1 or self.epochs < 1 or self.batch_size < 1 or self.temperature <= 0:
            raise ConfigError("budget, batch_size and epochs must be >= 1 and temperature > 0")

    def as_dict(self) -> dict:
        return asdict(self)

    def collection(self) -> KnockoffSettings:
        """The same query schedule as Knockoff's (which samples, in which batches, with resends)."""
        return KnockoffSettings(budget=self.budget, batch_size=self.batch_size, seed=self.seed,
                                resend_rejected=self.resend_rejected)


def mse_loss(stolen: torch.Tensor, victim: torch.Tensor, temperature: float) -> torch.Tensor:
    return ((stolen - victim) ** 2).sum(1).mean()


def infonce_loss(stolen: torch.Tensor, victim: torch.Tensor, temperature: float) -> torch.Tensor:
    sim = nn.functional.normalize(stolen, dim=1) @ nn.functional.normalize(victim, dim=1).T / temperature
    return nn.functional.cross_entropy(sim, torch.arange(len(stolen)))


def softnn_loss(stolen: torch.Tensor, victim: torch.Tensor, temperature: float) -> torch.Tensor:
    z = nn.functional.normalize(torch.cat([stolen, victim]), dim=1)
    b = len(stolen)
    labels = torch.cat([torch.arange(b), torch.arange(b)])
    logits = -torch.cdist(z, z).pow(2) / temperature
    logits.fill_diagonal_(float("-inf"))  # a point is not its own neighbour
    same = labels[:, None] == labels[None, :]
    same.fill_diagonal_(False)
    log_all = torch.logsumexp(logits, 1)
    log_same = torch.logsumexp(logits.masked_fill(~same, float("-inf")), 1)
    return (log_all - log_same).mean()


LOSS_FUNCTIONS = {"mse": mse_loss, "infonce": infonce_loss, "softnn": softnn_loss}


def train_stolen(t: Transcript, sample_shape, s: EncoderExtractionSettings, losses: list[float] | None = None
                 ) -> nn.Module:
    """A local encoder trained to reproduce the returned embeddings ``t.probs`` of ``t.x``."""
    if len(t.x) == 0:
        raise ConfigError("the attacker collected no answers: every request was rejected")
    width = t.probs.shape[1]
    model = build_model(s.surrogate, sample_shape, width, seed=s.seed)
    x, v = torch.from_numpy(t.x.astype(np.float32)), torch.from_numpy(t.probs.astype(np.float32))
    loss_fn = LOSS_FUNCTIONS[s.loss]
    model.train()
    run_epochs(model.parameters(), len(x), lambda idx, _: loss_fn(model(x[idx]), v[idx], s.temperature), s.epochs,
               s.train_batch_size, s.learning_rate, s.seed, losses=losses,
               min_batch=1 if s.loss == "mse" else 2)  # contrastive losses need another sample in the batch
    model.eval()
    return model


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Mean cosine similarity of matching rows."""
    a = a / (np.linalg.norm(a, axis=1, keepdims=True) + 1e-12)
    b = b / (np.linalg.norm(b, axis=1, keepdims=True) + 1e-12)
    return float(np.mean(np.sum(a * b, 1)))


@dataclass(frozen=True)
class VictimReference:
    """What scoring compares with: the victim's embeddings of the probe-training and test splits, its probe."""

    train_emb: np.ndarray
    test_emb: np.ndarray
    probe_test_labels: np.ndarray
    accuracy: float

    @classmethod
    def from_embeddings(cls, train_emb, y_train, test_emb, y_test, seed: int = 0) -> "VictimReference":
        probe = fit_probe(train_emb, y_train, seed)
        pred = probe.predict(test_emb)
        return cls(train_emb, test_emb, pred, float(np.mean(pred == y_test)))

    @classmethod
    def of_model(cls, zoo_dir, victim, data) -> "VictimReference":
        """From the victim's own ONNX file (``victim``: its manifest entry): the scorer's ground truth."""
        from zoo.export import open_session, run_onnx

        session = open_session(Path(zoo_dir) / victim.onnx_file)
        return cls.from_embeddings(run_onnx(session, data.x["victim_train"]), data.y["victim_train"],
                                   run_onnx(session, data.x["test"]), data.y["test"])


def score_stolen(stolen: nn.Module, data, victim: VictimReference, budget: int, seed: int = 0) -> dict:
    """Downstream accuracy of a probe on the stolen encoder, agreement with the victim's probe, embedding
    similarity, and the queries spent against the victim's training set size."""
    tr, te = embed(stolen, data.x["victim_train"]), embed(stolen, data.x["test"])
    probe = fit_probe(tr, data.y["victim_train"], seed)
    pred = probe.predict(te)
    acc = float(np.mean(pred == data.y["test"]))
    return {"accuracy": acc, "agreement": float(np.mean(pred == victim.probe_test_labels)),
            "cosine": cosine(te, victim.test_emb), "victim_accuracy": victim.accuracy,
            "accuracy_ratio": acc / victim.accuracy if victim.accuracy > 0 else None,
            "queries_over_training_set": budget / max(1, len(data.y["victim_train"]))}


def untrained_baseline(surrogate: str, seed: int, data, victim: VictimReference) -> dict:
    """The surrogate architecture untrained (as a stolen encoder starts): random features alone already give a
    probe some accuracy, so what the queries bought is the difference (and the agreement and similarity, which
    random features lack). It depends on the architecture and seed only: compute it once per pair."""
    untrained = build_model(surrogate, tuple(data.sample_shape), victim.test_emb.shape[1], seed=seed)
    return score_stolen(untrained, data, victim, 0, seed)


def extract_encoder(sut, pool: np.ndarray, data, victim: VictimReference, s: EncoderExtractionSettings,
                    requirements: dict | None = None, baseline: dict | None = None) -> dict:
    """Query, train, score. ``sut``: the router (/v1/embed) or the victim straight through Triton;
    ``baseline``: :func:`untrained_baseline` for ``s.surrogate`` and ``s.seed`` (computed here when not given)."""
    t = collect(sut, pool, s.collection(), requirements)
    losses: list[float] = []
    stolen = train_stolen(t, tuple(data.sample_shape), s, losses)
    baseline = baseline or untrained_baseline(s.surrogate, s.seed, data, victim)
    return score_stolen(stolen, data, victim, s.budget, s.seed) | {
        "untrained_accuracy": baseline["accuracy"], "untrained_agreement": baseline["agreement"],
        "untrained_cosine": baseline["cosine"],
        "answers": int(len(t.x)), "requests": t.requests, "rejected_requests": t.rejected_requests,
        "first_loss": losses[0] if losses else None, "final_loss": losses[-1] if losses else None}
