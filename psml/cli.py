"""The ``psml`` command line. Each subcommand is a small function; errors print one line and exit non-zero."""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

from common.errors import PsmlError

DEFAULT_ZOO = Path("model_repository/default")
RUN_DIR = Path("runs")


# ---- zoo -------------------------------------------------------------------------------------------------
def zoo_build(a) -> None:
    from zoo.build import build_zoo, get_profile
    from zoo.manifest import load_manifest
    from zoo.table import zoo_table

    from dataclasses import replace

    from common.errors import ConfigError

    name = a.profile
    if a.kind == "encoder" and name in ("default", "test"):  # the encoder recipe of the same size
        name = "encoder" if name == "default" else "encoder-test"
    p = get_profile(name)
    if p.kind != a.kind:
        raise ConfigError(f"zoo profile {name!r} builds {p.kind}s, not {a.kind}s (--kind)")
    sel = _selection_overrides(a)
    if sel:
        p = replace(p, profiling=replace(p.profiling, selection=replace(p.profiling.selection, **sel)))
    p = replace(p, seed=p.seed if a.seed is None else a.seed, dataset=a.dataset or p.dataset,
                repository=replace(p.repository, instance_count=a.instances or p.repository.instance_count,
                                   max_queue_delay_us=p.repository.max_queue_delay_us if a.max_queue_delay_us is None
                                   else a.max_queue_delay_us))
    out = build_zoo(p, Path(a.out), Path(a.data_root) if a.data_root else None)
    m = load_manifest(out)
    print(f"\nzoo {m.zoo.name!r} built in {m.zoo.build_seconds:.0f} s -> {out}\n")
    print(zoo_table(m))


def zoo_import(a) -> None:
    """Exit 0: imported; 2: a file, the data or Triton refused it (one line naming the file; nothing written)."""
    from dataclasses import replace

    from zoo.importer import QUICK_PROFILE, ImportSpec, import_zoo
    from zoo.manifest import load_manifest
    from zoo.profile import ProfileSettings
    from zoo.repository import RepositorySettings
    from zoo.table import zoo_table

    profiling = QUICK_PROFILE if a.quick else ProfileSettings()
    sel = _selection_overrides(a)
    if sel:
        profiling = replace(profiling, selection=replace(profiling.selection, **sel))
    spec = ImportSpec(name=a.name, onnx_files=tuple(Path(p) for p in a.onnx), data=Path(a.data),
                      attacker_pool=Path(a.attacker_pool) if a.attacker_pool else None,
                      softmax=None if a.softmax is None else tuple(a.softmax), pool_fraction=a.pool_fraction,
                      seed=a.seed, profiling=profiling,
                      repository=RepositorySettings(instance_count=a.instances))
    out = import_zoo(spec, Path(a.out))
    m = load_manifest(out)
    print(f"\nzoo {m.zoo.name!r} imported in {m.zoo.build_seconds:.0f} s -> {out}\n")
    print(zoo_table(m))


def zoo_show(a) -> None:
    from zoo.manifest import load_manifest
    from zoo.table import zoo_table

    print(zoo_table(load_manifest(Path(a.zoo))))


def _selection_overrides(a) -> dict:
    keys = ("percentile", "path", "batch_size", "concurrency")
    return {k: getattr(a, f"selection_{k}") for k in keys if getattr(a, f"selection_{k}") is not None}


def _selection_args(p) -> None:
    p.add_argument("--selection-percentile", type=int, choices=(50, 95, 99),
                   help="percentile of the figure the router selects with (default 99)")
    p.add_argument("--selection-path", choices=("direct", "router"),
                   help="direct to Triton or end to end through the router (default direct)")
    p.add_argument("--selection-batch-size", type=int, help="batch size of the selection figure (default 1)")
    p.add_argument("--selection-concurrency", type=int, help="concurrency of the selection figure (default 1)")


def zoo_validate(a) -> None:
    """Exit 0: every model VALID and the front unchanged (or --update rewrote the manifest); 1: INVALID; 2: error."""
    from .zoo_validation import run_validation

    try:
        valid = run_validation(Path(a.zoo), concurrency=tuple(a.concurrency or ()), duration_s=a.duration_s,
                               tolerance=a.tolerance, update=a.update, out_dir=Path(a.out) if a.out else None,
                               triton_url=a.triton_url, router_url=a.router_url, api_key=a.api_key,
                               selection=_selection_overrides(a))
    except PsmlError as e:
        print(f"psml: error: {e}", file=sys.stderr)
        raise SystemExit(2)
    if not valid:
        raise SystemExit(1)


# ---- triton ----------------------------------------------------------------------------------------------
def _triton_state_path(a) -> Path:
    return Path(a.state_dir) / "triton.state.json"


def triton_start(a) -> None:
    from stack.triton_server import ServerState, TritonServer, stale_reason

    state_path = _triton_state_path(a)
    old = ServerState.load(state_path)
    if old:
        reason = stale_reason(old.pid, old.start_ticks)
        if reason is None:
            raise PsmlError(f"Triton is already running (pid {old.pid}, HTTP {old.host}:{old.http_port}); "
                            f"psml triton stop first")
        print(f"stale Triton state file ({reason}): replaced")
    repo = Path(a.zoo) / "embedded"
    log_path = Path(a.state_dir) / "triton.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    from stack.triton_server import process_start_ticks

    server = TritonServer(repo, a.http_port, a.grpc_port, a.metrics_port, host=a.host,
                          startup_timeout_s=a.timeout_s, log_path=log_path).start()
    e = server.endpoints
    ServerState(server.process.pid, str(repo), e.host, e.http_port, e.grpc_port, e.metrics_port, str(log_path),
                process_start_ticks(server.process.pid)).save(state_path)
    print(f"Triton ready: pid {server.process.pid}, HTTP {e.http_url}, gRPC {e.grpc_url}, metrics {e.host}:{e.metrics_port}")


def triton_stop(a) -> None:
    from stack.triton_server import ServerState, stale_reason, stop_process_group

    state_path = _triton_state_path(a)
    s = ServerState.load(state_path)
    if s is None:
        print("Triton is not running (no state file)")
        return
    reason = stale_reason(s.pid, s.start_ticks)
    if reason is None:
        stop_process_group(s.pid)
    else:  # never signal a pid that is no longer ours
        print(f"stale Triton state file ({reason}): removed")
    state_path.unlink(missing_ok=True)
    print(f"Triton stopped (pid {s.pid})")


def triton_status(a) -> None:
    from stack.triton_server import ServerState, is_ready, model_states, stale_reason

    s = ServerState.load(_triton_state_path(a))
    if s is None:
        raise PsmlError("Triton is not running")
    reason = stale_reason(s.pid, s.start_ticks)
    if reason:
        raise PsmlError(f"Triton is not running (stale state file: {reason})")
    ready = is_ready(s.endpoints)
    print(f"Triton pid {s.pid}, HTTP {s.endpoints.http_url}, gRPC {s.endpoints.grpc_url}: {'READY' if ready else 'NOT READY'}")
    for name, st in sorted(model_states(s.endpoints).items()):
        print(f"  {name:<12} {st['state']}{(' - ' + st['reason']) if st['reason'] else ''}")
    if not ready:
        raise PsmlError("Triton is running but not ready")


# ---- parser ----------------------------------------------------------------------------------------------
def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="psml", description=__doc__)
    sub = ap.add_subparsers(dest="group", required=True)

    zoo = sub.add_parser("zoo", help="build and inspect model zoos").add_subparsers(dest="cmd", required=True)
    b = zoo.add_parser("build", help="train, export, profile and write the zoo's Triton repository")
    b.add_argument("--profile", default="default",
                   help="zoo recipe: default or test (with --kind encoder: their encoder recipes), encoder, encoder-test")
    b.add_argument("--kind", choices=("classifier", "encoder"), default="classifier",
                   help="classifiers answering probabilities, or SimCLR encoders answering embeddings")
    b.add_argument("--out", default="model_repository", help="parent folder of the zoo (default: model_repository)")
    b.add_argument("--dataset", help="override the recipe's data set: mnist1d, digits, mnist, cifar10")
    b.add_argument("--data-root", help="folder holding MNIST/CIFAR-10 in torchvision's layout (never downloaded)")
    b.add_argument("--seed", type=int, help="override the recipe's seed")
    b.add_argument("--instances", type=int, help="Triton model instances per model (both repository variants)")
    b.add_argument("--max-queue-delay-us", type=int, help="dynamic batcher delay in microseconds (0: no wait)")
    _selection_args(b)
    b.set_defaults(func=zoo_build)
    i = zoo.add_parser("import", help="a zoo from your own ONNX classifiers and labelled data: check, serve, profile")
    i.add_argument("--name", required=True, help="the zoo's name (its folder under --out)")
    i.add_argument("--onnx", nargs="+", required=True, help="two or more ONNX files, one model each (name: file stem)")
    i.add_argument("--data", required=True,
                   help="labelled evaluation set: .npz with x and y, or a torchvision MNIST/CIFAR-10 folder")
    i.add_argument("--attacker-pool", help=".npz with x: the attackers' query pool (default: part of --data)")
    i.add_argument("--pool-fraction", type=float, default=0.5,
                   help="share of --data set aside as the attackers' pool when no --attacker-pool (default 0.5)")
    i.add_argument("--softmax", nargs="*", metavar="MODEL",
                   help="append a softmax to models that answer logits: alone for all, or the models' names")
    i.add_argument("--out", default="model_repository", help="parent folder of the zoo (default: model_repository)")
    i.add_argument("--seed", type=int, default=0, help="seed of the evaluation split and the profile (default 0)")
    i.add_argument("--instances", type=int, default=1, help="Triton model instances per model (default 1)")
    i.add_argument("--quick", action="store_true", help="a short profile (rough figures): to try an import out")
    _selection_args(i)
    i.set_defaults(func=zoo_import)
    s = zoo.add_parser("show", help="print a built zoo's table")
    s.add_argument("--zoo", default=str(DEFAULT_ZOO), help="a built zoo folder (psml zoo build)")
    s.set_defaults(func=zoo_show)
    v = zoo.add_parser("validate", help="re-measure a built zoo on this host: VALID/INVALID per model and front")
    v.add_argument("--zoo", default=str(DEFAULT_ZOO), help="a built zoo folder (psml zoo build)")
    v.add_argument("--concurrency", type=int, nargs="+", help="profiled concurrency levels to re-measure (default: all)")
    v.add_argument("--duration-s", type=float, help="seconds per model and cell (default: the profile's)")
    v.add_argument("--tolerance", type=float, default=0.25,
                   help="relative drift of the selection figure allowed beyond its 95%% interval (default 0.25)")
    v.add_argument("--update", action="store_true", help="re-profile every cell and rewrite the manifest atomically")
    v.add_argument("--out", help="folder for validate.json and the PNG plots (default: runs/validate/<zoo>)")
    v.add_argument("--triton-url", help="an already-running Triton's HTTP host:port (e.g. the compose GPU host)")
    v.add_argument("--router-url", help="a router started with allow_pinned_model, for the end-to-end path")
    v.add_argument("--api-key", help="API key for --router-url")
    _selection_args(v)
    v.set_defaults(func=zoo_validate)

    tri = sub.add_parser("triton", help="run the embedded Triton server").add_subparsers(dest="cmd", required=True)
    triton_help = {"start": "start Triton on a zoo's embedded repository and wait until every model is READY",
                   "stop": "stop the Triton that psml triton start started", "status": "Triton's readiness and each model's state"}
    for name, func in (("start", triton_start), ("stop", triton_stop), ("status", triton_status)):
        t = tri.add_parser(name, help=triton_help[name])
        t.add_argument("--state-dir", default=str(RUN_DIR), help="where pid, ports and log are kept")
        t.set_defaults(func=func)
        if name == "start":
            t.add_argument("--zoo", default=str(DEFAULT_ZOO), help="a built zoo folder (psml zoo build)")
            t.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback only)")
            t.add_argument("--http-port", type=int, default=8000, help="Triton's HTTP port (0: a free one)")
            t.add_argument("--grpc-port", type=int, default=8001, help="Triton's gRPC port (0: a free one)")
            t.add_argument("--metrics-port", type=int, default=8002, help="Triton's Prometheus metrics port")
            t.add_argument("--timeout-s", type=float, default=180.0, help="how long to wait for every model READY")

    for register in _extensions():
        register(sub)
    return ap


def _extensions():
    """Subcommand groups that live beside their code (router, store, attacks, load tests, demo)."""
    from . import cli_attack, cli_demo, cli_loadtest, cli_report, cli_router, cli_store

    return [cli_router.register, cli_store.register, cli_attack.register, cli_loadtest.register, cli_demo.register,
            cli_report.register]


class Terminated(BaseException):
    """SIGTERM, raised where the command is, so that its servers stop as on Ctrl-C (Python's default SIGTERM
    ends the process at once: a report's Triton, stubs and router were left running)."""


def _terminate(signum, frame):
    raise Terminated()


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:  # only from the main thread, and only over the default action (an embedding program keeps its own)
        previous = signal.signal(signal.SIGTERM, _terminate) \
            if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL else None
    except ValueError:
        previous = None
    try:
        args.func(args)
    except PsmlError as e:
        print(f"psml: error: {e}", file=sys.stderr)
        return getattr(e, "exit_code", 1)
    except KeyboardInterrupt:
        print("psml: interrupted", file=sys.stderr)
        return 130
    except Terminated:
        print("psml: terminated", file=sys.stderr)
        return 143
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return 0


if __name__ == "__main__":
    sys.exit(main())
