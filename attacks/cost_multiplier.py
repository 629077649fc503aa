"""The attacker's cost multiplier under a defense: how many more samples it needs to steal as well as undefended.

From a budget sweep (e.g. 250 / 500 / 1,000 / 2,000 samples sent, every sample counted): the smallest swept
budget at which the defended attack's mean fidelity comes within ``within`` (1 point) of the undefended attack's
mean fidelity at the reference budget, divided by that reference budget. A defense that only slows the attacker
down shows a multiplier above 1 where fidelity at equal budget alone would call it protective; one that holds
shows "not reached by N" (the largest budget swept). Swept budgets are what was measured, so the multiplier is
coarse (a factor of two between sweep points): it says "between 1x and 2x", never 1.37x.
"""

from __future__ import annotations

WITHIN_POINTS = 0.01


def cost_multiplier(fidelity_by_budget: dict[int, float], undefended_fidelity: float, reference_budget: int,
                    within: float = WITHIN_POINTS) -> dict:
    """``fidelity_by_budget``: the defended attack's mean fidelity per swept budget (samples sent).
    Returns the multiplier (None when not reached), the budget that reached it, and a one-line reading."""
    if reference_budget < 1 or not fidelity_by_budget:
        raise ValueError("a cost multiplier needs a positive reference budget and at least one swept budget")
    target = undefended_fidelity - within
    reached = sorted(b for b, f in fidelity_by_budget.items() if f is not None and f >= target)
    largest = max(fidelity_by_budget)
    if not reached:
        return {"cost_multiplier": None, "reached_at": None, "target_fidelity": target,
                "reading": f"not reached by {largest}"}
    m = reached[0] / reference_budget
    return {"cost_multiplier": m, "reached_at": reached[0], "target_fidelity": target,
            "reading": f"{m:g}x (within {100 * within:g} point of undefended at {reached[0]} samples)"}
