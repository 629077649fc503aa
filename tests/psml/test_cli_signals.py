"""A foreground command stopped with SIGTERM (a scheduler, `timeout`, `kill`) unwinds like Ctrl-C: its servers'
context managers stop them. Python's default SIGTERM ends the process at once and a report's Triton, stubs and
router stayed behind as orphans."""

import signal
import subprocess
import sys
import time

SCRIPT = r"""
import argparse, sys, time
from pathlib import Path
import psml.cli as cli

out = Path(sys.argv[1])

def command(a):
    try:  # stands for `with triton_for(...), router_for(...)`: what a real command holds while it runs
        out.with_suffix(".started").touch()
        time.sleep(60)
    finally:
        out.with_suffix(".stopped").touch()

def parser():
    p = argparse.ArgumentParser()
    p.set_defaults(func=command)
    return p

cli.parser = parser
sys.exit(cli.main([]))
"""


def test_sigterm_unwinds_the_command_and_exits_143(tmp_path):
    """Catches SIGTERM left at Python's default (exit -15, the finally block never runs: servers orphaned)."""
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, str(tmp_path / "run")], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while not (tmp_path / "run.started").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 143 and "psml: terminated" in err
    assert (tmp_path / "run.stopped").exists()
