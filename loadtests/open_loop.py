"""Open-loop load (MLPerf LoadGen's server scenario): benign requests at Poisson send times fixed before the run.

Every request is its own asyncio task, started at its scheduled time whatever earlier answers do, so a slow
answer never delays the next send, and its latency counts from the scheduled time: time it waited because the
server (or the generator) was behind is measured, not hidden (coordinated omission). A send issued more than
``late_slack_ms`` after its scheduled time is counted late. Bodies are built before the run (binary tensors)
so the generator only sends and reads during it.

``processes`` > 1 splits the rate over that many generator processes, each its own Poisson stream of rate R/N
from its own seed (merged: Poisson of rate R), so one process's CPU is not the limit. Attackers run in a process
of their own (loadtests/open_attacker.py) during the attack window, closed loop as in the Locust run.
Each process writes its exact per-request records into the run folder; loadtests/open_summary.py merges them.
Locust is never imported here: its gevent monkey-patching would change the asyncio client under measurement.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import queue
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from common.errors import ConfigError, PsmlError

from .arrivals import CONTENT_STREAM, split_schedule, stream_rng
from .benign import benign_indices, benign_requirements
from .config import INTERRUPTED_FILE, LoadSettings
from .useful import benign_answer

OPEN_RECORDS_GLOB = "latencies-open-*.jsonl"  # matches the closed loop's LATENCY_FILE_GLOB: one summary reads both
GENERATOR_FILE_GLOB = "generator-*.json"


@dataclass(frozen=True)
class OpenLoopSettings:
    rate_per_s: float  # offered rate in all, over every generator process
    duration_s: float  # sends are scheduled in [0, duration_s); answers are awaited up to drain_s longer
    processes: int = 1  # generator processes; 1 runs in this process
    # a send issued later than this after its scheduled time counts late (timers alone are ~1 ms late)
    late_slack_ms: float = 5.0
    late_share_limit: float = 0.01  # more late sends than this share: the generator limited the offered rate
    cpu_share_limit: float = 0.9  # a generator process busier than this share of one core: it was the limit
    request_timeout_s: float = 30.0
    drain_s: float = 30.0
    trial: int = 0  # a max-rate search's trial index: each trial its own streams

    def __post_init__(self):
        if not self.rate_per_s > 0:
            raise ConfigError(f"the offered rate must be > 0 requests/s, got {self.rate_per_s}")
        if not self.duration_s > 0:
            raise ConfigError(f"the open-loop duration must be > 0 seconds, got {self.duration_s}")
        if not (isinstance(self.processes, int) and self.processes >= 1):
            raise ConfigError(f"generator processes must be an integer >= 1, got {self.processes}")
        if not self.late_slack_ms >= 0 or not 0 <= self.late_share_limit <= 1 or not 0 < self.cpu_share_limit <= 1:
            raise ConfigError("late_slack_ms must be >= 0, late_share_limit in [0, 1] and cpu_share_limit in (0, 1]")


@dataclass(frozen=True)
class Prepared:
    """One benign request, built before the run."""

    body: bytes
    headers: dict
    labels: np.ndarray | None  # true labels (classifier zoos), to score the answer
    max_latency_ms: float | None


def prepare_requests(n: int, zoo_info: dict, load: LoadSettings, rng: np.random.Generator, data) -> list[Prepared]:
    """The same benign population as the Locust users (loadtests/benign.py), as binary request bodies."""
    x, y = data.x["test"], data.y["test"]
    out = []
    for _ in range(n):
        idx = benign_indices(rng, len(x), load)
        acc, lat = benign_requirements(rng, zoo_info, load)
        batch = np.ascontiguousarray(x[idx], dtype="<f4")
        headers = {"x-api-key": load.benign_key, "content-type": "application/octet-stream",
                   "x-psml-shape": ",".join(map(str, batch.shape))}
        if acc is not None:
            headers["x-psml-min-accuracy"] = repr(acc)
        if lat is not None:
            headers["x-psml-max-latency-ms"] = repr(lat)
        out.append(Prepared(batch.tobytes(), headers, y[idx], lat))
    return out


async def send_schedule(url: str, name: str, times: np.ndarray, requests: list[Prepared], start: float,
                        s: OpenLoopSettings, score: bool) -> tuple[list[dict], int]:
    """Send ``requests[i]`` at ``start + times[i]`` (perf_counter seconds); returns (records, unfinished).
    ``name``: the records' "<client> <path>"; ``score``: decode labels and score them (classifier zoos)."""
    import aiohttp

    records: list[dict] = []

    async def one(i: int, session) -> None:
        scheduled = start + times[i]
        issued = time.perf_counter()
        status, recv_s, labels = 0, 0.0, None
        try:
            async with session.post(url, data=requests[i].body, headers=requests[i].headers) as r:
                raw = await r.read()
                status, t = r.status, time.perf_counter()
                if status == 200 and score:
                    labels = json.loads(raw).get("labels")
                recv_s = time.perf_counter() - t
        except (aiohttp.ClientError, asyncio.TimeoutError):
            status = 0  # on the wire and failed: a drop
        done = time.perf_counter()
        row = {"name": name,
               "ms": (done - scheduled) * 1e3, "ok": status == 200, "status": status, "sched_s": float(times[i]),
               "late_ms": (issued - scheduled) * 1e3, "service_ms": (done - issued) * 1e3, "recv_us": recv_s * 1e6,
               "samples": len(requests[i].labels)}
        if score:
            row["useful"] = asdict(benign_answer(requests[i].labels, labels, row["ms"], requests[i].max_latency_ms))
        records.append(row)

    # limit=0: no bound on connections, so a slow answer never holds back the next send (an open loop)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector,
                                     timeout=aiohttp.ClientTimeout(total=s.request_timeout_s)) as session:
        tasks = []
        for i in range(len(times)):
            delay = start + times[i] - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i, session)))
        _, pending = await asyncio.wait(tasks, timeout=s.drain_s) if tasks else (set(), set())
        for t in pending:
            t.cancel()
    return records, len(pending)


def generator_process(index: int, url: str, zoo_info: dict, load: LoadSettings, s: OpenLoopSettings,
                      times: np.ndarray, start_at=None) -> None:
    """One generator process: build its requests, wait for the common start, send, write its records.
    ``start_at``: a callable returning the common start (perf_counter seconds) once every process is ready;
    None: start 50 ms from now (one process)."""
    from zoo.data import Dataset

    _raise_open_files_limit()
    endpoint = zoo_info.get("endpoint", "/v1/infer")
    name = f"benign {endpoint}"
    data = Dataset.load(Path(load.data_file))
    requests = prepare_requests(len(times), zoo_info, load, stream_rng(load.seed, CONTENT_STREAM, index, s.trial), data)
    start = start_at() if start_at is not None else time.perf_counter() + 0.05
    cpu0, wall0 = time.process_time(), time.perf_counter()
    records, unfinished = _run(send_schedule(url.rstrip("/") + endpoint, name, times, requests, start, s,
                                                    score=endpoint == "/v1/infer"))
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    out = Path(load.out_dir)
    useful = [r.pop("useful") for r in records if "useful" in r]
    _write_lines(out / f"latencies-open-{index}.jsonl", records)
    if useful:  # the same file the Locust users write: the summary's useful goodput reads both
        _write_lines(out / f"useful-open-{index}.jsonl", useful)
    if unfinished:  # still on the wire at the drain deadline: the router may have audited them
        with open(out / INTERRUPTED_FILE, "a") as f:
            f.write("".join(json.dumps({"name": name, "ts": time.time()}) + "\n" for _ in range(unfinished)))
    (out / f"generator-{index}.json").write_text(json.dumps({
        "process": index, "scheduled": len(times), "recorded": len(records), "unfinished": unfinished,
        "cpu_s": cpu, "wall_s": wall, "cpu_share_of_one_core": cpu / wall if wall > 0 else None,
        "loadavg_1min": os.getloadavg()[0]}))


def _raise_open_files_limit() -> None:
    """Every request in flight holds a connection: the soft limit on open files (often 1,024) would turn a slow
    server's backlog into the generator's own errors, so raise it to the hard limit (as the router does)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _run(coroutine):
    """uvloop where installed (the router's loop too): about half the CPU per request of asyncio's own loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coroutine)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coroutine)


def _write_lines(path: Path, rows: list[dict]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(r, default=lambda o: o.item()) + "\n" for r in rows))  # numpy scalars
    tmp.replace(path)


def _child(index, url, zoo_info, load, s, times, ready, go, start_value, role) -> None:
    def start_at() -> float:
        ready.put(index)  # this process has built its requests ...
        go.wait()  # ... and waits for the parent's common start
        return start_value.value

    if role == "attacker":
        from .open_attacker import run_attackers

        run_attackers(url, zoo_info, load, s, start_at)
    else:
        generator_process(index, url, zoo_info, load, s, times, start_at)


def run_open_loop(router_url: str, load: LoadSettings, s: OpenLoopSettings) -> None:
    """Run the open loop (and any attackers) to the end; every process writes its records into load.out_dir."""
    from stack.clients import RouterClient

    client = RouterClient(router_url, load.benign_key)
    try:
        zoo_info = client.zoo()
    except OSError as e:
        raise PsmlError(f"the router at {router_url} cannot be reached ({e})") from e
    finally:
        client.close()
    Path(load.out_dir).mkdir(parents=True, exist_ok=True)
    schedules = split_schedule(s.rate_per_s, s.duration_s, load.seed, s.processes, s.trial)
    attack = load.attackers > 0 and load.attack_s > 0 and load.warmup_s < s.duration_s
    if s.processes == 1 and not attack:
        generator_process(0, router_url, zoo_info, load, s, schedules[0])
        return
    # spawn, not fork: a forked child would inherit this process's threads and event-loop state
    ctx = multiprocessing.get_context("spawn")
    roles = ["generator"] * s.processes + (["attacker"] if attack else [])
    ready, go, start_value = ctx.Queue(), ctx.Event(), ctx.Value("d", 0.0)
    procs = [ctx.Process(target=_child, args=(i, router_url, zoo_info, load, s,
                                               schedules[i] if role == "generator" else None, ready, go, start_value,
                                               role), daemon=True) for i, role in enumerate(roles)]
    for p in procs:
        p.start()
    # children start (about a second of imports) and build their requests, then all start at one instant
    waiting, deadline = len(procs), time.monotonic() + 120
    while waiting:
        if time.monotonic() > deadline or any(p.exitcode is not None for p in procs):
            for p in procs:
                p.kill()
            raise PsmlError("a load-generator process failed or was not ready within 120 s (see the output above)")
        try:
            ready.get(timeout=0.1)
            waiting -= 1
        except queue.Empty:
            pass
    start_value.value = time.perf_counter() + 0.1  # CLOCK_MONOTONIC: one clock for every process on this host
    go.set()
    for p in procs:
        p.join(timeout=s.duration_s + s.drain_s + 120)
    failed = [p.exitcode for p in procs if p.exitcode != 0]
    if failed:
        raise PsmlError(f"a load-generator process exited with code {failed[0]} (see the output above)")
