"""Surrogate training in worker processes: one single-threaded training per worker (opt-in, PSML_TRAIN_WORKERS).

Knockoff's surrogates are small networks trained on a few thousand samples. On such a net one training spread
over two intra-op threads gains little (the ops are too small to split well), while two trainings side by side
each use a core fully. Extraction collects its transcripts first (network-bound, in order), then trains them
here. Every training is seeded by its own settings, so a run's figures do not depend on the order in which
trainings finished (one worker trains in this process, at its own thread count: the last bits may differ).
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context

import numpy as np

from .knockoff import train_and_score


# below this much training (samples x epochs over all jobs; ~10 s of cnn_large on one core here) the workers'
# start-up costs more than they save: quick runs and tests train in this process
MIN_PARALLEL_SAMPLE_EPOCHS = 20_000


def _one_thread() -> None:
    import torch

    torch.set_num_threads(1)
    torch.set_num_interop_threads(1)


def _train(job: tuple) -> dict:
    t, sample_shape, n_classes, s, x_test, y_test, labels = job
    reasons: list[str] = []
    out = train_and_score(t, sample_shape, n_classes, s, x_test, y_test, labels, log=reasons.append)
    return out | {"log": reasons}


def default_workers() -> int:
    """``PSML_TRAIN_WORKERS`` (e.g. the cores this process may use), else 1: train in this process, whose torch
    already uses every core. Measured here: on a machine loaded by other jobs two single-threaded workers trained
    4 surrogates in 50 s against 110 s in-process; on the quiet machine the report's extraction step took 762 s
    with two workers against 661 s in-process a day earlier, on a host that profile validation found 6-45%
    slower that day: not settled, so the old behaviour stays the default."""
    if os.environ.get("PSML_TRAIN_WORKERS"):
        return max(1, int(os.environ["PSML_TRAIN_WORKERS"]))
    return 1


# surrogates already trained in this process, by everything their training and score depend on (job_key);
# bounded: a long benchmark keeps only the latest
_TRAINED: dict[str, dict] = {}
_TRAINED_MAX = 512


def job_key(job: tuple) -> str:
    """Everything a training and its score are a function of: the rows and answers trained on (labels only
    where the settings say so), the architecture, epochs, learning rate and seed, and the scoring data. Two
    attackers whose transcripts hold the same rows and answers (two specifications the same model always
    serves, or a defense that changed nothing) train the same surrogate: it is trained once and both get it."""
    t, sample_shape, n_classes, s, x_test, y_test, labels = job
    h = hashlib.sha256(repr((tuple(sample_shape), n_classes, s.surrogate, s.epochs, s.learning_rate,
                             s.labels_only, s.seed)).encode())
    answers = t.probs.argmax(1) if s.labels_only else t.probs
    for a in (t.x, answers, x_test, y_test, labels):
        a = np.ascontiguousarray(a)
        h.update(repr((a.dtype.str, a.shape)).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def train_many(jobs: list[tuple], workers: int | None = None, log=print, progress=None,
               reuse: bool = True) -> list[dict]:
    """``jobs``: (transcript, sample_shape, n_classes, KnockoffSettings, x_test, y_test, victim_labels) each;
    returns train_and_score's result per job, in the jobs' order. A job identical to one trained before in this
    process (``job_key``) is not trained again: its result is that training's, marked ``reused``. Worker
    processes are spawned (not forked: a fork of a process whose torch thread pool already ran can hang) and
    each trains single-threaded. ``reuse=False`` trains every job (identical ones once)."""
    keys = [job_key(job) for job in jobs]
    results: list[dict | None] = [None] * len(jobs)
    todo: dict[str, int] = {}  # key -> the job that trains it
    for i, k in enumerate(keys):
        if reuse and k in _TRAINED:
            results[i] = _TRAINED[k] | {"reused": True}
        elif k not in todo:
            todo[k] = i
    trained = _train_all([jobs[i] for i in todo.values()], workers, log, progress)
    for k, out in zip(todo, trained):
        _TRAINED[k] = out
        while len(_TRAINED) > _TRAINED_MAX:
            _TRAINED.pop(next(iter(_TRAINED)))
    for i, k in enumerate(keys):
        if results[i] is None:
            results[i] = _TRAINED[k] | {"reused": todo[k] != i}
            if todo[k] != i and progress is not None:
                progress()
        elif progress is not None:
            progress()
    return results  # type: ignore[return-value]


def _train_all(jobs: list[tuple], workers: int | None, log, progress) -> list[dict]:
    if not jobs:
        return []
    workers = min(workers or default_workers(), len(jobs))
    if workers > 1 and sum(len(job[0].x) * job[3].epochs for job in jobs) < MIN_PARALLEL_SAMPLE_EPOCHS:
        workers = 1  # too little work to pay for starting the workers (each imports torch: ~2-4 s)
    results: list[dict | None] = [None] * len(jobs)
    if workers <= 1:
        for i, job in enumerate(jobs):
            results[i] = _train(job)
            _report(results[i], log, progress)
        return results  # type: ignore[return-value]
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn"), initializer=_one_thread) as pool:
        futures = {pool.submit(_train, job): i for i, job in enumerate(jobs)}
        for f in as_completed(futures):
            results[futures[f]] = f.result()
            _report(results[futures[f]], log, progress)
    return results  # type: ignore[return-value]


def _report(result: dict, log, progress) -> None:
    for line in result.pop("log"):
        log(line)
    if progress is not None:
        progress()
