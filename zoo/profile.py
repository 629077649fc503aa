"""Latency profiles of zoo models with a load axis, measured through a real Triton server.

A profile is a grid of cells, one per (path, batch size, concurrency), in the style of Model Analyzer's
latency-vs-concurrency curves:
- path ``direct``: tritonclient HTTP (binary tensors) straight to Triton; ``router``: the router's public API
  end to end, with the model pinned (a profiling router only, see ``allow_pinned_model``);
- each cell is a closed loop of ``concurrency`` client threads (stack.closed_loop, the same code the benchmarks
  use); percentiles come from the exact per-request times, with percentile-bootstrap 95% intervals.

The cell the router selects with (``SelectionFigure``: percentile, path, batch size, concurrency) is measured
in ``selection_rounds`` rounds in which every model takes its turn, so drift on a noisy machine falls on every
model alike, and the figure's run-to-run spread is known (the standard deviation of the per-round figures over
sqrt(rounds): how far the pooled figure moves between two runs): the Pareto front is only trustworthy where
neighbouring models differ by several times that spread.
Triton's own /v2/models/<m>/stats, differenced around the direct cells at concurrency 1, split a request into
queue and compute time.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from stack.closed_loop import run_closed_loop
from common.errors import ConfigError, PsmlError
from common.stats import PERCENTILES, latency_summary

PATHS = ("direct", "router")


@dataclass(frozen=True)
class SelectionFigure:
    """Which profiled figure the router compares with a request's max_latency_ms (and the front is built on)."""

    percentile: int = 99
    path: str = "direct"
    batch_size: int = 1
    concurrency: int = 1

    def __post_init__(self):
        if self.percentile not in PERCENTILES:
            raise ConfigError(f"selection percentile must be one of {PERCENTILES}, got {self.percentile}")
        if self.path not in PATHS:
            raise ConfigError(f"selection path must be one of {', '.join(PATHS)}, got {self.path!r}")

    def describe(self) -> str:
        return f"p{self.percentile} at batch {self.batch_size}, concurrency {self.concurrency}, {self.path}"


@dataclass(frozen=True)
class ProfileSettings:
    batch_sizes: tuple[int, ...] = (1, 32)
    concurrency: tuple[int, ...] = (1, 4, 16)
    paths: tuple[str, ...] = PATHS
    selection: SelectionFigure = field(default_factory=SelectionFigure)
    selection_rounds: int = 5  # rounds of the selection cell; their spread is the figure's run-to-run spread
    selection_requests_per_round: int = 300  # per model per round (a p99 from fewer is nearly the maximum)
    cell_duration_s: float = 0.3  # every other cell runs this long per model ...
    cell_min_requests: int = 30  # ... and sends at least this many requests (all threads together)
    warmup_requests: int = 10  # per model and cell, not recorded
    bootstrap_resamples: int = 1000
    seed: int = 0  # which test samples are sent, and the bootstrap stream

    def __post_init__(self):
        bad = [p for p in self.paths if p not in PATHS]
        if bad or not self.paths:
            raise ConfigError(f"profile paths must be among {', '.join(PATHS)}, got {list(self.paths)}")
        if min(self.concurrency, default=0) < 1 or min(self.batch_sizes, default=0) < 1:
            raise ConfigError("profile concurrency levels and batch sizes must be positive integers")
        s = self.selection
        if s.path not in self.paths or s.batch_size not in self.batch_sizes or s.concurrency not in self.concurrency:
            raise ConfigError(f"the selection figure ({s.describe()}) must be one of the profiled cells")
        if self.selection_rounds < 2:
            raise ConfigError("selection_rounds must be at least 2 (the run-to-run spread needs two rounds)")

    @classmethod
    def from_dict(cls, d: dict) -> "ProfileSettings":
        """Back from a manifest's ``profile.settings.profiling`` (tuples and the selection figure restored)."""
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        for k in ("batch_sizes", "concurrency", "paths"):
            known[k] = tuple(known[k])
        known["selection"] = SelectionFigure(**known["selection"])
        return cls(**known)

    def as_dict(self) -> dict:
        d = asdict(self)
        return d | {"client": "closed loop, one tritonclient.http (direct) or HTTP/1.1 keep-alive (router) "
                              "connection per thread"}


def _inputs(x: np.ndarray, batch: int, rng) -> list[np.ndarray]:
    return [x[rng.integers(0, len(x), batch)] for _ in range(16)]


class Profiler:
    """Measures cells for a set of models; ``make_sut(path, model)`` returns a fresh client for one thread."""

    def __init__(self, make_sut, models: list[str], x: np.ndarray, s: ProfileSettings, stats_client=None, log=print):
        self.make_sut, self.models, self.s, self.stats_client, self.log = make_sut, models, s, stats_client, log
        rng = np.random.default_rng(s.seed)
        self.inputs = {b: _inputs(x, b, rng) for b in s.batch_sizes}

    def _triton_stats(self, model: str) -> dict[str, int] | None:
        if self.stats_client is None:
            return None
        st = self.stats_client.get_inference_statistics(model)["model_stats"][0]["inference_stats"]
        return {k: int(st[k]["ns"]) for k in ("queue", "compute_input", "compute_infer", "compute_output")} | {
            "count": int(st["success"]["count"])}

    def _loop(self, path, model, batch, conc, per_thread, duration_s=None):
        make = lambda: self.make_sut(path, model)
        stats = path == "direct" and conc == 1
        before = {}
        take_before = (lambda: before.update(self._triton_stats(model) or {})) if stats else None
        r = run_closed_loop(make, self.inputs[batch], conc, per_thread, duration_s=duration_s,
                            warmup_per_thread=max(1, self.s.warmup_requests // conc), after_warmup=take_before)
        after = self._triton_stats(model) if before else None
        if r.errors:
            raise PsmlError(f"profiling {model} ({path}, batch {batch}, concurrency {conc}): {r.errors} requests "
                            f"failed, first: {r.first_error}")
        delta = None if not after else {k: after[k] - before[k] for k in after}
        return r, delta

    def _cell(self, path, batch, conc, lat_ms, elapsed_s) -> dict:
        return {"path": path, "batch_size": batch, "concurrency": conc, "requests": int(len(lat_ms)),
                "errors": 0, "duration_s": elapsed_s,  # a cell with a failed request raises in _loop
                **latency_summary(lat_ms, self.s.bootstrap_resamples, self.s.seed),
                "throughput_samples_per_s": batch * len(lat_ms) / elapsed_s if elapsed_s > 0 else 0.0}

    def run(self, paths: tuple[str, ...]) -> dict[str, dict]:
        """Model -> {"cells": [...], "triton": [...], "selection": {...} (when its path is measured)}."""
        s, sel = self.s, self.s.selection
        out = {m: {"cells": [], "triton": {}} for m in self.models}
        triton_sum = {m: {} for m in self.models}
        if sel.path in paths:
            self.log(f"  selection figure ({sel.describe()}): {s.selection_rounds} rounds x "
                     f"{s.selection_requests_per_round} requests per model")
            rounds = {m: [] for m in self.models}
            elapsed = {m: 0.0 for m in self.models}
            for k in range(s.selection_rounds):
                order = self.models[k % len(self.models):] + self.models[: k % len(self.models)]
                for m in order:
                    r, delta = self._loop(sel.path, m, sel.batch_size, sel.concurrency,
                                          max(1, s.selection_requests_per_round // sel.concurrency))
                    rounds[m].append(r.latencies_ms)
                    elapsed[m] += r.elapsed_s
                    _add(triton_sum[m], sel.batch_size, delta)
            for m in self.models:
                pooled = np.concatenate(rounds[m])
                cell = self._cell(sel.path, sel.batch_size, sel.concurrency, pooled, elapsed[m])
                per_round = [float(np.percentile(v, sel.percentile)) for v in rounds[m]]
                key = f"p{sel.percentile}_ms"
                out[m]["cells"].append(cell)
                round_spread = float(np.std(per_round, ddof=1))
                # The figure pools all rounds, so between two runs it moves by about the per-round spread over
                # sqrt(rounds). Estimated from rounds (not the bootstrap), it also carries drift between rounds.
                out[m]["selection"] = {"value_ms": cell[key], "ci95_ms": cell["ci95"][key],
                                       "round_values_ms": per_round, "round_spread_ms": round_spread,
                                       "spread_ms": float(round_spread / np.sqrt(len(per_round)))}
        for path in paths:
            for batch in s.batch_sizes:
                for conc in s.concurrency:
                    if (path, batch, conc) == (sel.path, sel.batch_size, sel.concurrency):
                        continue
                    self.log(f"  {path:<6} batch {batch:>3} concurrency {conc:>3}")
                    for m in self.models:
                        r, delta = self._loop(path, m, batch, conc, max(1, -(-s.cell_min_requests // conc)),
                                              s.cell_duration_s)
                        out[m]["cells"].append(self._cell(path, batch, conc, r.latencies_ms, r.elapsed_s))
                        _add(triton_sum[m], batch, delta)
        for m in self.models:
            out[m]["triton"] = [_per_request(b, d) for b, d in sorted(triton_sum[m].items())]
        return out


def _add(acc: dict, batch: int, delta: dict | None) -> None:
    if delta is not None:
        acc[batch] = {k: acc.get(batch, {}).get(k, 0) + v for k, v in delta.items()}


def _per_request(batch: int, d: dict) -> dict:
    n = max(1, d["count"])
    return {"batch_size": batch} | {f"{k}_us": d[k] / n / 1e3
                                    for k in ("queue", "compute_input", "compute_infer", "compute_output")}


def figure_from_cell(result: dict, fig: SelectionFigure) -> dict:
    """A selection figure read off one measured cell (no rounds, so no run-to-run spread is known)."""
    key = f"p{fig.percentile}_ms"
    cell = next((c for c in result["cells"]
                 if (c["path"], c["batch_size"], c["concurrency"]) == (fig.path, fig.batch_size, fig.concurrency)), None)
    if cell is None:
        raise ConfigError(f"no measured cell for the selection figure (p{fig.percentile} at batch {fig.batch_size}, "
                          f"concurrency {fig.concurrency}, {fig.path})")
    return {"value_ms": cell[key], "ci95_ms": cell["ci95"][key], "round_values_ms": [cell[key]],
            "round_spread_ms": 0.0, "spread_ms": 0.0}


def merge(a: dict[str, dict], b: dict[str, dict]) -> dict[str, dict]:
    """Combine two runs of :meth:`Profiler.run` over different paths."""
    out = {}
    for m in a:
        out[m] = {"cells": a[m]["cells"] + b[m]["cells"], "triton": a[m]["triton"] or b[m]["triton"]}
        sel = a[m].get("selection") or b[m].get("selection")
        if sel is not None:
            out[m]["selection"] = sel
    return out
