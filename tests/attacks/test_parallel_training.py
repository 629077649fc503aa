"""Surrogates trained in worker processes: the same figures as in-process, in the jobs' order."""

import numpy as np

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
    alone = train_many(jobs, workers=1, log=lambda _: None)
    assert [round(r["accuracy"], 2) for r in parallel] == [round(r["accuracy"], 2) for r in alone]
    assert parallel[0]["accuracy"] > 0.6 and parallel[0]["accuracy"] > parallel[1]["accuracy"]
    assert parallel[1]["failed"] and any("failed" in line for line in logged)  # random labels: retried, reported
