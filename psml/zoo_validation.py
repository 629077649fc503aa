"""``psml zoo validate``: re-measure a built zoo on this host, print verdicts, write JSON and plots, and with
``--update`` rewrite the manifest's profile atomically (accuracies and ONNX files kept)."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

from common.atomic import write_json_atomic
from common.errors import ConfigError, ManifestError
from common.versions import hardware, software_versions


_MEASURED = ("latency", "selection_latency_ms", "pareto", "front_margin")  # recomputed from a new profile


def _entries(manifest) -> dict[str, dict]:
    keep = lambda m: {k: v for k, v in m.model_dump().items() if k not in _MEASURED}
    return {m.name: keep(m) for m in manifest.models}


def _check_zoo(zoo_dir: Path, manifest, local_triton: bool) -> None:
    missing = [p for p in [zoo_dir / manifest.zoo.dataset.data_file] +
               ([zoo_dir / "embedded" / m.name / "1" / "model.onnx" for m in manifest.models] if local_triton else [])
               if not p.is_file()]
    if missing:
        raise ManifestError(f"zoo {zoo_dir} is incomplete: {missing[0]} is missing; rebuild it (psml zoo build)")


def run_validation(zoo_dir: Path, concurrency: tuple[int, ...] = (), duration_s: float | None = None,
                   tolerance: float = 0.25, update: bool = False, out_dir: Path | None = None,
                   triton_url: str | None = None, router_url: str | None = None, api_key: str | None = None,
                   selection: dict | None = None, log=print) -> bool:
    """``selection``: a new selection figure for ``--update`` (percentile, path, batch_size, concurrency keys)."""
    from zoo.build import compose_manifest
    from zoo.data import Dataset
    from zoo.manifest import MANIFEST_NAME, load_manifest, save_manifest
    from zoo.plots import accuracy_latency, latency_vs_concurrency
    from zoo.profile import ProfileSettings
    from zoo.profiling import profile_zoo, restrict
    from zoo.repository import ModelIO
    from zoo.validate import compare, verdict_lines

    manifest = load_manifest(zoo_dir)
    _check_zoo(zoo_dir, manifest, triton_url is None)
    if not 0 < tolerance < 1:
        raise ConfigError(f"--tolerance is a relative drift in (0, 1), got {tolerance}")
    if update and concurrency:
        raise ConfigError("--update re-profiles every cell; drop --concurrency")
    if selection and not update:
        raise ConfigError("a new selection figure only takes effect with --update")
    if duration_s is not None and duration_s <= 0:
        raise ConfigError(f"--duration-s must be positive, got {duration_s}")
    s = ProfileSettings.from_dict(manifest.profile.settings["profiling"])
    if selection:
        s = replace(s, selection=replace(s.selection, **selection))  # validated by ProfileSettings itself
    s = restrict(s, concurrency)
    if duration_s is not None:
        s = replace(s, cell_duration_s=duration_s)
    if triton_url and not router_url and "router" in s.paths:
        if s.selection.path == "router":
            raise ConfigError("this zoo selects with the router path: give --router-url (a profiling router)")
        log("no --router-url: the end-to-end path is skipped")
        s = replace(s, paths=("direct",))
    data = Dataset.load(zoo_dir / manifest.zoo.dataset.data_file)
    started = time.perf_counter()
    observed = profile_zoo(zoo_dir, [m.name for m in manifest.models], data.x["test"], s, log=log,
                           triton_http_url=triton_url, router_url=router_url, api_key=api_key,
                           tensors={m.name: ModelIO.of_entry(m) for m in manifest.models},
                           endpoint=manifest.zoo.endpoint)
    report = compare(manifest, observed, tolerance)
    print("\n".join(verdict_lines(report)))
    out_dir = out_dir or Path("runs") / "validate" / zoo_dir.name
    out_dir.mkdir(parents=True, exist_ok=True)
    result = {"zoo": str(zoo_dir), "report": report, "observed": observed, "settings": s.as_dict(),
              "seconds": time.perf_counter() - started, "hardware": hardware(), "software": software_versions(),
              "manifest_profile": {"hardware": manifest.profile.hardware, "measured_utc": manifest.profile.measured_utc}}
    write_json_atomic(out_dir / "validate.json", result)
    accuracy_latency(report, out_dir / "accuracy_latency.png")
    latency_vs_concurrency(observed, out_dir / "latency_vs_concurrency.png")
    print(f"wrote {out_dir / 'validate.json'}, {out_dir / 'accuracy_latency.png'}, {out_dir / 'latency_vs_concurrency.png'}")
    if update:
        header = {"zoo": manifest.zoo.model_dump(),
                  "settings": {k: v for k, v in manifest.profile.settings.items() if k != "profiling"}}
        new = compose_manifest(header, _entries(manifest), observed, s)
        save_manifest(new, zoo_dir / MANIFEST_NAME)  # atomic: a failure above left the old manifest untouched
        print(f"updated {zoo_dir / MANIFEST_NAME}: front {sorted(m.name for m in new.models if m.pareto)}")
        return True
    return report["valid"]
