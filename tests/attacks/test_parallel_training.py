"""Surrogates trained in worker processes: the same figures as in-process, in the jobs' order."""

import numpy as np

import attacks.parallel_training as parallel_training
from attacks.knockoff import KnockoffSettings, Transcript
from attacks.parallel_training import train_many


def test_worker_results_come_back_in_the_jobs_order_and_match_in_process_training():
    """A long job first, then short ones that finish before it: results must follow the jobs, not completion.
    Catches results in completion order (the long job's figure would land last) and lost retry logs."""
    rng = np.random.default_rng(0)
    w = rng.normal(size=(40, 10))
    x_test = rng.normal(size=(400, 40)).astype(np.float32)
    y_test = (x_test @ w).argmax(1)

    def job(n, epochs, labels_only=False, noise=False):
        x = rng.normal(size=(n, 40)).astype(np.float32)
        probs = np.eye(10, dtype=np.float32)[rng.integers(0, 10, n) if noise else (x @ w).argmax(1)]
        s = KnockoffSettings(budget=n, surrogate="logreg", epochs=epochs, labels_only=labels_only, seed=n)
        return Transcript(x, probs, 1, 0, n), (1, 40), 10, s, x_test, y_test, y_test

    jobs = [job(1500, 20), job(50, 2, noise=True), job(400, 10), job(100, 5, labels_only=True)]
    logged = []
    parallel = train_many(jobs, workers=2, log=logged.append)
    alone = train_many(jobs, workers=1, log=lambda _: None, reuse=False)
    assert [round(r["accuracy"], 2) for r in parallel] == [round(r["accuracy"], 2) for r in alone]
    assert parallel[0]["accuracy"] > 0.6 and parallel[0]["accuracy"] > parallel[1]["accuracy"]
    assert parallel[1]["failed"] and any("failed" in line for line in logged)  # random labels: retried, reported


def _teacher_job(seed=0, n=300, labels_only=False):
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(20, 5))
    x = rng.normal(size=(n, 20)).astype(np.float32)
    probs = np.eye(5, dtype=np.float32)[(x @ w).argmax(1)]
    x_test = rng.normal(size=(200, 20)).astype(np.float32)
    y_test = (x_test @ w).argmax(1)
    s = KnockoffSettings(budget=n, surrogate="logreg", epochs=4, labels_only=labels_only, seed=3)
    return Transcript(x, probs, 1, 0, n), (1, 20), 5, s, x_test, y_test, y_test


def test_an_identical_job_is_trained_once_and_a_changed_answer_is_trained_again(monkeypatch):
    """Reuse is keyed by everything training depends on. Catches a key without the answers (a defense that
    flipped one label would get the undefended surrogate's figures), without the seed or the label mode, and
    a reused result that differs from training it again (training is deterministic, which justifies reuse)."""
    calls = []
    real = parallel_training.train_and_score
    monkeypatch.setattr(parallel_training, "train_and_score", lambda *a, **k: calls.append(1) or real(*a, **k))
    monkeypatch.setattr(parallel_training, "_TRAINED", {})
    a = _teacher_job()
    flipped = _teacher_job()
    flipped[0].probs[0] = np.roll(flipped[0].probs[0], 1)
    other_seed = a[:3] + (KnockoffSettings(budget=300, surrogate="logreg", epochs=4, seed=4),) + a[4:]
    labels_only = _teacher_job(labels_only=True)
    out = train_many([a, _teacher_job(), flipped, other_seed, labels_only], workers=1)
    assert len(calls) == 4  # a and its copy once; the flipped answer, the other seed, labels-only each
    assert [r["reused"] for r in out] == [False, True, False, False, False]
    again = train_many([_teacher_job()], workers=1)  # a later call in the same process reuses it too
    assert len(calls) == 4 and again[0]["reused"]
    fresh = train_many([_teacher_job()], workers=1, reuse=False)
    assert len(calls) == 5 and not fresh[0]["reused"]
    assert (fresh[0]["accuracy"], fresh[0]["fidelity"]) == (out[0]["accuracy"], out[0]["fidelity"])
