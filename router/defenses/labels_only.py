"""Output perturbation: answer the top-1 label only (a one-hot probability vector).

The strongest output defense against soft-label extraction, and no defense against an attacker that trains on
labels (Knockoff with hard labels): the label is the service itself. Must be the last output defense (nothing
is left to perturb after it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class LabelsOnly:
    name = "labels_only"

    def perturb_output(self, probs: np.ndarray, labels: np.ndarray, rng: np.random.Generator):
        out = np.zeros_like(probs)
        out[np.arange(len(probs)), labels] = 1.0
        return out, labels
