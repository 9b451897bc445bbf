"""What every long-running process shares: the exit watchdog (a process whose shutdown hangs, a blocked event loop
included, is ended at the bound) and a settled garbage collector."""

from __future__ import annotations

import subprocess
import sys
import time

HANGS = """
import time
from gateway.process import exit_by
exit_by(0.3)
time.sleep(30)  # a shutdown stuck in blocking code: the loop could not even run a timer
"""
FINISHES = """
from gateway.process import exit_by
cancel = exit_by(0.3)
cancel()
"""

SETTLED = """
import gc
from gateway.process import run

async def main() -> None:
    print(gc.get_threshold()[0], gc.get_freeze_count() > 0)

run(main)
"""


def test_a_process_runs_with_what_it_imported_frozen_and_young_collections_spaced_out() -> None:
    done = subprocess.run([sys.executable, "-c", SETTLED], check=True, capture_output=True, text=True, timeout=30)
    assert done.stdout.split() == ["10000", "True"]


def test_a_hung_shutdown_is_ended_at_the_bound() -> None:
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", HANGS], check=False, capture_output=True, text=True, timeout=10)
    assert done.returncode == 1
    assert time.monotonic() - started < 5
    assert "shutdown took over 0.3s: exiting now" in done.stderr


def test_a_called_off_watchdog_lets_the_process_exit_normally() -> None:
    done = subprocess.run([sys.executable, "-c", FINISHES], check=False, capture_output=True, text=True, timeout=10)
    assert done.returncode == 0
