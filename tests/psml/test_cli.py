"""The psml command line end to end: the router lifecycle and the demo's smoke run."""

import json
import subprocess
import sys
import time

import numpy as np
import pytest

from common.ports import free_port
from stack.clients import RouterClient
from tests.conftest import API_KEYS

PSML = [sys.executable, "-m", "psml.cli"]


def run(*args, timeout=300):
    return subprocess.run(PSML + list(args), capture_output=True, text=True, timeout=timeout)


def test_router_start_status_goodput_stop(zoo_dir, triton, data, tmp_path):
    settings = tmp_path / "router.json"
    settings.write_text(json.dumps({"zoo": str(zoo_dir), "triton_http_url": triton.endpoints.http_url,
                                    "api_keys": API_KEYS, "audit_log": str(tmp_path / "audit.jsonl"),
                                    "port": free_port()}))
    state = ["--state-dir", str(tmp_path)]
    r = run("router", "start", "--settings", str(settings), *state)
    assert r.returncode == 0, r.stderr
    try:
        again = run("router", "start", "--settings", str(settings), *state)
        assert again.returncode == 1 and "already running" in again.stderr
        st = run("router", "status", *state)
        assert st.returncode == 0 and '"backend_ready":true' in st.stdout
        url = json.loads((tmp_path / "router.state.json").read_text())["url"]
        client = RouterClient(url, "k-benign")
        client.infer(data.x["test"][:3], min_accuracy=0.0)
        client.close()
    finally:
        assert run("router", "stop", *state).returncode == 0
    g = run("router", "goodput", "--audit-log", str(tmp_path / "audit.jsonl"), "--json")
    report = json.loads(g.stdout)
    assert report["benign"]["requests"] == 1 and report["benign"]["good"] == 1
    assert run("router", "status", *state).returncode == 1


def test_router_start_with_bad_settings_is_one_line(tmp_path):
    (tmp_path / "bad.json").write_text(json.dumps({"api_keys": {"k": "a"}, "polcy": "x"}))
    r = run("router", "start", "--settings", str(tmp_path / "bad.json"), "--state-dir", str(tmp_path))
    assert r.returncode == 1 and "polcy" in r.stderr and r.stderr.count("\n") == 1


@pytest.mark.timeout(900)  # end to end through real servers: minutes, not a hang
def test_demo_quick_runs_every_step(zoo_dir, tmp_path):
    r = run("demo", "--profile", zoo_dir.name, "--zoo-root", str(zoo_dir.parent), "--run-dir", str(tmp_path),
            "--quick", timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    for marker in ("[1]", "[2]", "[3]", "[4]", "[5]", "[6]", "[7]", "staircase", "fingerprinted", "attacker"):
        assert marker in r.stdout
    attacks = json.loads((tmp_path / "attacks.json").read_text())
    assert attacks["fingerprint"]["results"]["staircase"]["consistency"]["consistency"] >= 0.99
    summary = json.loads((tmp_path / "loadtest" / "summary.json").read_text())
    assert summary["count_check"]["unaccounted"] == 0
    assert summary["count_check"]["audit_records"] == summary["audit"]["records"]
    assert np.isfinite(summary["audit"]["goodput"]["benign"]["goodput_share"])


def test_attack_and_load_against_an_already_running_router(start_router, zoo_dir, tmp_path):
    router = start_router("external")
    fp = tmp_path / "fp.json"
    r = run("attack", "fingerprint", "--zoo", str(zoo_dir), "--method", "staircase", "--consistency-queries", "30",
            "--router-url", router.url, "--api-key", "k-attacker", "--out", str(fp))
    assert r.returncode == 0, r.stderr
    by_signature = json.loads(fp.read_text())["results"]["staircase"]["consistency"]
    assert by_signature["scored_by"] == "signature" and by_signature["consistency"] == 1.0
    r = run("attack", "fingerprint", "--zoo", str(zoo_dir), "--method", "staircase", "--consistency-queries", "30",
            "--router-url", router.url, "--api-key", "k-attacker", "--audit-log", str(router.audit_path),
            "--out", str(fp))
    assert r.returncode == 0 and json.loads(fp.read_text())["results"]["staircase"]["consistency"]["consistency"] == 1.0
    before = sum(1 for _ in open(router.audit_path))
    out = tmp_path / "lt"
    r = run("loadtest", "--zoo", str(zoo_dir), "--out-dir", str(out), "--router-url", router.url, "--audit-log",
            str(router.audit_path), "--benign-key", "k-benign", "--attacker-key", "k-attacker", "--benign-users", "2",
            "--attackers", "0", "--warmup-s", "3", "--attack-s", "0", "--cooldown-s", "0")
    assert r.returncode == 0, r.stdout + r.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["router"] == {"external": router.url}
    assert summary["count_check"]["unaccounted"] == 0
    assert summary["audit"]["records"] == sum(1 for _ in open(router.audit_path)) - before
    assert run("loadtest", "--zoo", str(zoo_dir), "--router-url", router.url).returncode == 1


def test_every_subcommand_and_option_has_a_one_line_help():
    """Walks the whole parser: catches a new subcommand or option added without help (psml X --help silent)."""
    import argparse

    from psml.cli import parser

    missing = []

    def walk(p, path):
        for a in p._actions:
            if isinstance(a, argparse._SubParsersAction):
                helped = {c.dest: c.help for c in a._choices_actions}
                for name, sp in a.choices.items():
                    if not helped.get(name):
                        missing.append(" ".join(path + [name]))
                    walk(sp, path + [name])
            elif not isinstance(a, argparse._HelpAction) and not a.help:
                missing.append(f"{' '.join(path)} {'/'.join(a.option_strings) or a.dest}")

    walk(parser(), ["psml"])
    assert not missing, missing


def test_stale_state_is_recognised_gone_zombie_or_someone_elses_pid():
    """Catches the kill(pid, 0) check alone: a killed, unreaped server (a zombie) still passes it, and so does any
    process that has since taken the pid."""
    import os
    import signal

    from stack.triton_server import process_start_ticks, stale_reason

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    ticks = process_start_ticks(child.pid)
    assert stale_reason(child.pid, ticks) is None
    os.kill(child.pid, signal.SIGKILL)
    for _ in range(100):  # not reaped: a zombie until wait()
        if stale_reason(child.pid, ticks):
            break
        time.sleep(0.02)
    assert "zombie" in stale_reason(child.pid, ticks)
    child.wait()
    assert "gone" in stale_reason(child.pid, ticks)
    assert "another process" in stale_reason(os.getpid(), (process_start_ticks(os.getpid()) or 0) + 1)


def test_router_killed_with_sigkill_leaves_a_state_that_start_and_status_call_stale(zoo_dir, triton, tmp_path):
    import os
    import signal

    settings = tmp_path / "router.json"
    settings.write_text(json.dumps({"zoo": str(zoo_dir), "triton_http_url": triton.endpoints.http_url,
                                    "api_keys": API_KEYS, "audit_log": str(tmp_path / "audit.jsonl"), "port": 0}))
    state = ["--state-dir", str(tmp_path)]
    assert run("router", "start", "--settings", str(settings), *state).returncode == 0
    os.kill(json.loads((tmp_path / "router.state.json").read_text())["pid"], signal.SIGKILL)
    time.sleep(0.5)
    st = run("router", "status", *state)
    assert st.returncode == 1 and "stale state file" in st.stderr
    again = run("router", "start", "--settings", str(settings), *state)
    try:
        assert again.returncode == 0 and "stale router state file" in again.stdout, again.stderr
        assert run("router", "status", *state).returncode == 0
    finally:
        assert run("router", "stop", *state).returncode == 0
