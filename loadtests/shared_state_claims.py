"""What the audit logs of routers sharing one store must show after a shared-state load run (pure functions:
``records`` maps each router's name to its audit records).

- budget: a key's samples served over ALL routers never exceed its query budget, and equal it when the key was
  refused a batch that the remaining budget could not hold only because the budget was spent (a refused batch
  of n means served + n > budget; a batch of 1 refused: served == budget exactly);
- flag: PRADA flags a key once, counting the key's samples over all routers (a detector per router would see
  only its share, and each router would raise its own flag), and, under block, every later request of the key,
  at every router, is refused;
- benign: natural keys are neither flagged nor refused (the false-positive share) and keep their goodput.
"""

from __future__ import annotations

import re

from router.goodput import summarize

DETECTED = re.compile(r"prada after (\d+) samples")


def _of(records: dict[str, list[dict]], client: str) -> list[tuple[str, dict]]:
    """The client's records from every router, by receipt time."""
    return sorted(((name, r) for name, rs in records.items() for r in rs if r["client"] == client),
                  key=lambda nr: nr[1]["ts"])


def _is_budget_refusal(r: dict) -> bool:
    return r["outcome"] == "refused" and r["status"] == 403 and "samples" in (r.get("detail") or "")


def budget_claim(records: dict[str, list[dict]], client: str, budget: int) -> dict:
    mine = _of(records, client)
    served = {name: sum(r["batch_size"] for n, r in mine if n == name and r["status"] == 200) for name in records}
    refusals = {name: sum(_is_budget_refusal(r) for n, r in mine if n == name) for name in records}
    other = {name: sum(r["status"] != 200 and not _is_budget_refusal(r) for n, r in mine if n == name)
             for name in records}
    # a refusal before the body was read (batch_size None) is a worker remembering "all samples used": as a 1
    refused_batches = [r["batch_size"] or 1 for _, r in mine if _is_budget_refusal(r)]
    total = sum(served.values())
    smallest = min(refused_batches, default=None)
    asked_more = smallest is not None
    return {"client": client, "budget_samples": budget, "served_samples": total, "served_per_router": served,
            "budget_refusals_per_router": refusals, "other_non_200_per_router": other,
            "asked_samples_at_least": total + sum(refused_batches), "asked_more": asked_more,
            "smallest_refused_batch": smallest,
            "holds": total <= budget and (not asked_more or total + smallest > budget),
            "exact": total == budget}


def flag_claim(records: dict[str, list[dict]], client: str, refuses: bool = True) -> dict:
    """When PRADA flagged the key, through which router, counting which samples; ``refuses`` (action block): and
    whether every router refused it from then on (under log it is served on, and only the count is judged)."""
    mine = _of(records, client)
    at = next((i for i, (_, r) in enumerate(mine) if r.get("detected") or r.get("prada_flagged")), None)
    out = {"client": client, "flagged": at is not None, "requests": len(mine), "refuses": refuses,
           "samples_sent": sum(r["batch_size"] or 0 for _, r in mine)}
    if at is None:
        return out | {"holds": False, "crossed": False}
    router, flag = mine[at]
    m = DETECTED.match(flag.get("detected") or "")
    answered = flag["ts"] + flag["router_ms"] / 1e3
    later = [(n, r) for n, r in mine[at + 1:] if r["ts"] > answered]
    after = {name: {"requests": sum(n == name for n, _ in later),
                    "served": sum(n == name and r["status"] == 200 for n, r in later),
                    "blocked": sum(n == name and r["status"] == 403 for n, r in later)} for name in records}
    others = [name for name in records if name != router]
    first_other = next((r for n, r in later if n in others), None)
    crossed = first_other is not None and first_other["status"] == 403
    detections = sum(bool(r.get("detected")) for _, r in mine)
    at_flag = sum(r["batch_size"] for _, r in mine[:at] if r["status"] == 200) + (flag["batch_size"] or 0)
    detector = int(m.group(1)) if m else None
    return out | {"flagged_by": router, "detector_samples": detector, "samples_at_flag_all_routers": at_flag,
                  "detections": detections, "flagging_status": flag["status"], "after_flag": after,
                  "crossed": crossed, "holds": detections == 1 and detector == at_flag
                  and (not refuses or crossed and not any(a["served"] for a in after.values()))}


def benign_claim(records: dict[str, list[dict]], clients: list[str]) -> dict:
    per = {c: [r for _, r in _of(records, c)] for c in clients}
    flagged = [c for c, rs in per.items() if any(r.get("prada_flagged") for r in rs)]
    refused = [c for c, rs in per.items() if any(r["outcome"] == "refused" for r in rs)]
    everything = [r for rs in per.values() for r in rs]
    g = summarize(everything)
    return {"keys": len(clients), "keys_flagged": flagged, "keys_refused": refused,
            "false_positive_share": len(set(flagged) | set(refused)) / len(clients) if clients else None,
            "requests": g["requests"], "refused_requests": sum(r["outcome"] == "refused" for r in everything),
            "samples_served": sum(r["batch_size"] for r in everything if r["status"] == 200),
            "goodput_share": g["goodput_share"], "goodput_rate_per_s": g["goodput_rate_per_s"],
            "slo_attainment": g["slo_attainment"], "reject_rate": g["reject_rate"], "drop_rate": g["drop_rate"],
            "per_router_requests": {name: sum(r["client"] in per for r in rs) for name, rs in records.items()},
            "holds": not flagged and not refused}
