"""Profile a zoo on a live stack: a real Triton (started here on free loopback ports, or one already running
elsewhere, e.g. the compose GPU deployment) and, for the end-to-end path, a profiling router in front of it.

``psml zoo build`` and ``psml zoo validate`` both call :func:`profile_zoo`, so a profile and its re-measurement
are taken by the same code.
"""

from __future__ import annotations

import tempfile
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path

import numpy as np

from common.errors import ConfigError, TritonError
from stack.clients import DirectTriton, RouterClient

from .profile import Profiler, ProfileSettings, merge

PROFILING_KEY = "psml-profiling-key"


def profile_zoo(zoo_dir: Path, models: list[str], x: np.ndarray, s: ProfileSettings, log=print,
                triton_http_url: str | None = None,
                router_url: str | None = None, api_key: str | None = None, before_router=None,
                tensors: dict | None = None, after_triton=None, endpoint: str = "/v1/infer") -> dict[str, dict]:
    """Measure ``models`` on every path of ``s`` (see zoo.profile) with flat samples ``x``. With no URLs, starts
    Triton on ``zoo_dir/embedded`` and a profiling router on ``zoo_dir``'s manifest; ``before_router(direct_results)``
    runs in between (the build writes its provisional manifest there, which the router needs).
    ``tensors``: model -> zoo.repository.ModelIO where a model's tensors are not the built zoos' flat INPUT/PROBS;
    ``after_triton(http_url)`` runs once Triton is ready (the import checks served answers there); ``endpoint``:
    the router's path for this zoo's kind (``/v1/embed`` for encoders)."""
    import tritonclient.http as httpclient

    from stack.loopback import router_for, triton_for

    if triton_http_url and "router" in s.paths and not router_url:
        raise ConfigError("profiling an external Triton end to end needs --router-url of a router started with "
                          "allow_pinned_model (or profile the direct path only)")
    with ExitStack() as stack:
        run_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="psml-profile-")))
        triton = None
        if triton_http_url is None:
            triton = stack.enter_context(triton_for(zoo_dir, run_dir))
            triton_http_url = triton.endpoints.http_url
        stats = httpclient.InferenceServerClient(triton_http_url)
        stack.callback(stats.close)
        try:
            ready = stats.is_server_ready()
        except Exception as e:  # tritonclient raises its own and socket errors alike
            raise TritonError(f"Triton at {triton_http_url} cannot be reached: {str(e).splitlines()[0][:200]}") from e
        if not ready:
            raise TritonError(f"Triton at {triton_http_url} is not ready")
        if after_triton is not None:
            after_triton(triton_http_url)
        tensors = tensors or {}

        def direct(path, m):
            io = tensors.get(m)
            return DirectTriton(triton_http_url, m) if io is None else io.direct_client(triton_http_url, m)

        results = {m: {"cells": [], "triton": []} for m in models}
        if "direct" in s.paths:
            log("profiling direct to Triton ...")
            results = Profiler(direct, models, x, s, stats, log).run(("direct",))
        if before_router is not None:
            before_router(results)
        if "router" in s.paths:
            if router_url is None:
                router = stack.enter_context(router_for(zoo_dir, run_dir, triton, "profiling_router",
                                                        allow_pinned_model=True,
                                                        api_keys={PROFILING_KEY: "profiler"}))
                router_url, api_key = router.url, PROFILING_KEY
            via_router = lambda path, m: RouterClient(router_url, api_key, pin_model=m, endpoint=endpoint)
            log("profiling end to end through the router ...")
            routed = Profiler(via_router, models, x, s, None, log).run(("router",))
            results = merge(results, routed)
    return results


def restrict(s: ProfileSettings, concurrency: tuple[int, ...] | None) -> ProfileSettings:
    """The same settings measured at fewer concurrency levels (they must all be profiled ones)."""
    if not concurrency:
        return s
    unknown = sorted(set(concurrency) - set(s.concurrency))
    if unknown:
        raise ConfigError(f"concurrency {unknown} was not profiled in this zoo; choose from {list(s.concurrency)}")
    if s.selection.concurrency not in concurrency:
        concurrency = tuple(sorted(set(concurrency) | {s.selection.concurrency}))
    return replace(s, concurrency=tuple(concurrency))
