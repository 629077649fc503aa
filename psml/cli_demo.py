"""``psml demo``."""

from __future__ import annotations

from pathlib import Path


def demo(a) -> None:
    from .demo import QUICK, DemoSettings, attack_step, load_step, run_demo

    run_demo(Path(a.zoo_root), a.profile, Path(a.run_dir), a.rebuild, steps=[attack_step, load_step],
             demo=QUICK if a.quick else DemoSettings())


def register(sub) -> None:
    p = sub.add_parser("demo", help="build the zoo, start Triton and the router, run benign and attack traffic")
    p.add_argument("--profile", default="default", help="zoo recipe (default, or test for a quick run)")
    p.add_argument("--zoo-root", default="model_repository", help="parent folder of the zoo to build or reuse")
    p.add_argument("--run-dir", default="runs/demo", help="logs, audit logs and results of this demo")
    p.add_argument("--rebuild", action="store_true", help="train the zoo again even if it is built")
    p.add_argument("--quick", action="store_true", help="smaller attacks and a 14 s load: a smoke run of every step")
    p.set_defaults(func=demo)
