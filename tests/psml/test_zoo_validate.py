"""``psml zoo validate`` end to end: a real Triton and a profiling router re-measure the test zoo."""

import json
import shutil
import subprocess
import sys
import time

import pytest

from tests.conftest import cli_in_process
from zoo.manifest import load_manifest


def validate(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "psml.cli", "zoo", "validate", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def zoo_copy(zoo_dir, tmp_path):
    dest = tmp_path / "zoo"
    shutil.copytree(zoo_dir, dest)
    return dest


def test_right_after_the_build_every_model_is_valid(zoo_copy, tmp_path):
    """End to end on an unchanged host every model is VALID at a wide tolerance (0.9).

    The default 25% is a verdict on real drift; on a shared CI host a tail percentile moved by 42% between the
    build and this test, so the default would make this a timed assertion. At 0.9 the test still catches a
    validator that compares another model's figure, another percentile, or milliseconds with microseconds; the
    25% boundary itself is unit-tested in tests/zoo/test_validate_compare.py, and the loaded-host test below
    shows real drift is caught at the default. The front line may move with host noise (it is a verdict, exit 1),
    so only its presence is checked here."""
    r = validate("--zoo", zoo_copy, "--out", tmp_path / "v", "--tolerance", "0.9")
    assert r.returncode in (0, 1) and "Traceback" not in r.stderr, r.stdout + r.stderr
    manifest = load_manifest(zoo_copy)
    lines = [l for l in r.stdout.splitlines() if l.startswith(("VALID", "INVALID"))]
    assert len(lines) == len(manifest.models) + 1, r.stdout
    assert all(l.startswith("VALID") for l in lines[:-1]), r.stdout
    assert " front: manifest " in lines[-1]
    result = json.loads((tmp_path / "v" / "validate.json").read_text())
    assert result["report"]["valid"] == (r.returncode == 0)
    assert set(result["observed"]) == {m.name for m in manifest.models}
    assert {"hardware", "software", "settings"} <= set(result)
    for png in ("accuracy_latency.png", "latency_vs_concurrency.png"):
        assert (tmp_path / "v" / png).read_bytes()[:4] == b"\x89PNG"


def _burn(seconds: float) -> subprocess.Popen:
    code = f"import time\nend = time.time() + {seconds}\nwhile time.time() < end: pass"
    return subprocess.Popen([sys.executable, "-c", code])


def test_a_loaded_host_is_invalid_not_a_crash(zoo_copy, tmp_path):
    """CPU burners beside Triton (two per core, bounded in time): the profile no longer holds."""
    import os

    burners = [_burn(120) for _ in range(2 * (os.cpu_count() or 2))]
    try:
        time.sleep(0.5)
        r = validate("--zoo", zoo_copy, "--out", tmp_path / "v", "--concurrency", "1")
    finally:
        for b in burners:
            b.kill()
            b.wait()
    assert r.returncode == 1, r.stdout + r.stderr
    assert "INVALID" in r.stdout and "Traceback" not in r.stderr
    report = json.loads((tmp_path / "v" / "validate.json").read_text())["report"]
    slower = [m for m in report["models"] if not m["valid"]]
    assert slower and all(m["drift"] > 0.25 for m in slower)


def test_failed_update_leaves_the_manifest_untouched(zoo_copy, tmp_path):
    from common.ports import free_port

    old = (zoo_copy / "zoo.json").read_bytes()
    r = validate("--zoo", zoo_copy, "--update", "--triton-url", f"127.0.0.1:{free_port()}",
                 "--router-url", f"http://127.0.0.1:{free_port()}", "--api-key", "k", "--out", tmp_path / "v")
    assert r.returncode == 2 and "cannot be reached" in r.stderr and r.stderr.count("\n") == 1
    assert (zoo_copy / "zoo.json").read_bytes() == old


def test_bad_input_is_one_line_and_exit_2(zoo_copy, tmp_path, capsys):
    raw = json.loads((zoo_copy / "zoo.json").read_text())
    old = tmp_path / "old"
    old.mkdir()
    (old / "zoo.json").write_text(json.dumps(raw | {"schema_version": 1}))
    half = tmp_path / "half"
    shutil.copytree(zoo_copy, half)
    shutil.rmtree(half / "embedded")
    cases = [
        (["--zoo", tmp_path / "absent"], "cannot be read"),
        (["--zoo", old], "schema version 1"),
        (["--zoo", half], "is incomplete"),
        (["--zoo", zoo_copy, "--concurrency", "3"], "concurrency [3] was not profiled"),
        (["--zoo", zoo_copy, "--tolerance", "2"], "--tolerance"),
    ]
    for i, (args, text) in enumerate(cases):
        if i == 0:  # one through a real process: its exit status and its whole stderr
            r = validate(*args)
            code, err = r.returncode, r.stderr
        else:
            code, err = cli_in_process(["zoo", "validate", *map(str, args)], capsys)
        assert code == 2 and text in err and err.count("\n") == 1, (args, err)


def test_update_rewrites_the_profile_keeps_accuracies_and_files_and_can_choose_another_figure(zoo_copy, tmp_path):
    """``--update`` re-measures and rewrites the profile, keeping accuracies and ONNX files (catches an update that
    retrains, drops a model or leaves the old figures), here with end-to-end p95 instead of direct p99: the
    manifest's figures and front follow the documented setting. (One update run: two cost CI 15 s more.)"""
    before = load_manifest(zoo_copy)
    r = validate("--zoo", zoo_copy, "--out", tmp_path / "v", "--update", "--selection-path", "router",
                 "--selection-percentile", "95")
    assert r.returncode == 0, r.stdout + r.stderr
    after = load_manifest(zoo_copy)
    assert [(m.name, m.accuracy, m.onnx_sha256) for m in after.models] == \
           [(m.name, m.accuracy, m.onnx_sha256) for m in before.models]
    assert after.profile.measured_utc >= before.profile.measured_utc
    assert [m.selection_latency_ms for m in after.models] != [m.selection_latency_ms for m in before.models]
    observed = json.loads((tmp_path / "v" / "validate.json").read_text())["observed"]
    assert [m.selection_latency_ms for m in after.models] == [observed[m.name]["selection"]["value_ms"]
                                                              for m in after.models]
    assert (after.profile.selection.path, after.profile.selection.percentile) == ("router", 95)
    for m in after.models:
        routed, direct = m.latency.cell("router", 1, 1), m.latency.cell("direct", 1, 1)
        assert m.selection_latency_ms == routed.p95_ms == m.latency.selection.value_ms
        assert len(m.latency.selection.round_values_ms) > 1  # the new figure is the one measured in rounds
        assert direct.path == "direct" and routed.requests > 0  # both paths measured; which is faster is timing
    from zoo.pareto import FrontPoint, pareto_front_with_intervals

    assert {m.name for m in after.models if m.pareto} == pareto_front_with_intervals(
        {m.name: FrontPoint(m.accuracy, m.latency.cell("router", 1, 1).p95_ms, tuple(m.latency.selection.ci95_ms))
         for m in after.models})
    bad = validate("--zoo", zoo_copy, "--selection-concurrency", "3", "--update")
    assert bad.returncode == 2 and "must be one of the profiled cells" in bad.stderr
