"""Useful goodput: what benign clients got that they could use. A benign client knows the labels of what it
sends, so it can tell a useful answer from a served one: answered, within the latency it asked for (measured
at the client), and labelled right. A defense that flips labels (or serves a worse model than asked) looks free
to goodput by served model and latency; it is not free here. Counted in samples, since answers are batches.
Pure functions, the same for the Locust users, the benchmarks and the report.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class BenignAnswer:
    samples: int  # samples the request carried
    correct: int  # of them, answered with the true label (0 when not answered)
    answered: bool
    within_slo: bool  # client-measured time <= the request's max_latency_ms (True when it set none)


def benign_answer(labels_true: np.ndarray, labels_answered, elapsed_ms: float, max_latency_ms: float | None
                  ) -> BenignAnswer:
    """One benign request's outcome; ``labels_answered`` None when it was refused or failed."""
    n = len(labels_true)
    if labels_answered is None:
        return BenignAnswer(n, 0, False, False)
    correct = int(np.sum(np.asarray(labels_answered) == np.asarray(labels_true)))
    return BenignAnswer(n, correct, True, max_latency_ms is None or elapsed_ms <= max_latency_ms)


def useful_goodput(answers: list[BenignAnswer]) -> dict:
    """``useful_goodput_share``: samples answered within the SLO with the right label / samples sent;
    ``label_accuracy``: right labels / samples answered (what the answers were worth, whatever their time)."""
    sent = sum(a.samples for a in answers)
    answered = sum(a.samples for a in answers if a.answered)
    useful = sum(a.correct for a in answers if a.answered and a.within_slo)
    right = sum(a.correct for a in answers if a.answered)
    return {"samples_sent": sent, "samples_answered": answered, "samples_useful": useful,
            "useful_goodput_share": useful / sent if sent else None,
            "label_accuracy": right / answered if answered else None}
