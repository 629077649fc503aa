"""What the attack commands share: a router settings file's deployment choices, a zoo and its data, a result file
with its seeds, software and hardware."""

from __future__ import annotations

import time
from pathlib import Path

from common.atomic import write_json_atomic
from common.versions import hardware, software_versions

SELECTION_KEYS = ("policy", "defenses", "on_no_model", "seed")


def router_overrides(settings_path: str) -> dict:
    """The deployment choices (policy, defenses, no-model behaviour, seed) of a router settings file."""
    from router.settings import load_settings

    s = load_settings(settings_path)
    return {k: getattr(s, k) for k in SELECTION_KEYS}


def load_zoo(zoo: str):
    from zoo.data import Dataset
    from zoo.manifest import load_manifest

    manifest = load_manifest(zoo)
    return manifest, Dataset.load(Path(zoo) / manifest.zoo.dataset.data_file)


def write_result_file(path: str, kind: str, args: dict, payload: dict) -> None:
    settings = {k: v for k, v in args.items() if k != "func"}
    write_json_atomic(Path(path), {"kind": kind, "created_unix": time.time(), "settings": settings,
                                   "seeds": settings.get("seeds", []), "software": software_versions(),
                                   "hardware": hardware()} | payload)
    print(f"\nresult: {path}")
