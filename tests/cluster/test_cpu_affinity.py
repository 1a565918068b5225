"""Rollout workers' cores (cluster/cpu_affinity.py), claimed by real processes: one core each,
the lowest free first, a dead process's core free again at once, and a process finding none
free left as it was. Claims pin the claiming process, so each runs in a child, never here."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CORES = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []

pytestmark = pytest.mark.skipif(len(CORES) < 2, reason="needs Linux and 2 cores to share out")

_CLAIM = """
import json, os, sys
from cluster.cpu_affinity import claim_core
first = claim_core(sys.argv[1])
print(json.dumps([first, sorted(os.sched_getaffinity(0)), claim_core(sys.argv[1])]), flush=True)
sys.stdin.read()  # hold the claim until the test closes stdin
"""


class Claimant:
    """A child process that claims a core in `directory` and holds it until `release`."""

    def __init__(self, directory: Path):
        self.process = subprocess.Popen(
            [sys.executable, "-c", _CLAIM, str(directory)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        self.core, self.affinity, self.again = json.loads(self.process.stdout.readline())

    def release(self) -> None:
        self.process.stdin.close()
        assert self.process.wait(timeout=30) == 0


def test_each_process_gets_a_core_of_its_own(tmp_path):
    claimants = [Claimant(tmp_path) for _ in CORES]
    try:
        assert [c.core for c in claimants] == CORES  # the lowest free core, in turn
        for c in claimants:
            assert c.affinity == [c.core]  # pinned to it alone
            assert c.again == c.core  # a second claim keeps the core held
        assert (tmp_path / f"core-{CORES[0]}").read_text() == f"{claimants[0].process.pid}\n"
    finally:
        for c in claimants:
            c.release()


def test_a_dead_process_frees_its_core_and_a_full_house_pins_nothing(tmp_path):
    claimants = [Claimant(tmp_path) for _ in CORES]
    try:
        late = Claimant(tmp_path)  # every core is held
        assert late.core is None
        assert late.affinity == CORES  # left as it was
        late.release()
        claimants[0].process.kill()  # dies without letting go: the kernel drops its lock
        claimants[0].process.wait(timeout=30)
        successor = Claimant(tmp_path)
        assert (successor.core, successor.affinity) == (CORES[0], [CORES[0]])
        successor.release()
    finally:
        for c in claimants:
            if c.process.poll() is None:
                c.release()
