"""Dependency groups: the pins in pyproject's groups are requirements.txt's, and the serving path imports no
training framework (the router image installs only the serving group)."""

import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("torch", "onnxruntime", "onnx", "sklearn", "scipy", "matplotlib", "pytriton", "tritonclient", "locust")


def _pins(lines) -> dict[str, str]:
    out = {}
    for line in lines:
        line = line.split("#")[0].strip()
        if line:
            name, version = re.fullmatch(r"([A-Za-z0-9_.-]+)(?:\[[^\]]*\])?==(\S+)", line).groups()
            out[name.lower()] = version
    return out


def test_groups_repeat_the_pinned_requirements_exactly():
    """Catches a group that drifts from requirements.txt (a version bumped in one place only) or a requirement
    that no group installs."""
    pinned = _pins((ROOT / "requirements.txt").read_text().splitlines())
    groups = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    seen = {}
    for deps in groups.values():
        seen |= _pins(deps)
    assert seen == pinned


def test_the_serving_path_imports_no_training_framework():
    """Catches an import of zoo.export (torch) or tritonclient on the router's path: 1.1 s and ~250 MB each start."""
    code = ("import sys, router.app, router.asgi, router.server, router.triton_http, router.backend; "
            f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"
