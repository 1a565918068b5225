"""PyTorch's CPU kernel caches are bounded in every process a command starts (cluster/
kernel_caches.py); a value exported beforehand wins. The Ray actor's side is in
test_annotator_memory.py."""

import json
import os
import subprocess
import sys
from pathlib import Path

from cluster.kernel_caches import KERNEL_CACHE_ENTRIES, KERNEL_CACHE_VARS

ROOT = Path(__file__).resolve().parents[2]
PRINT_ENV = (
    "import json, os, sys; from cluster.cli import main; main(sys.argv[1:]); "
    f"print(json.dumps([os.environ.get(n) for n in {KERNEL_CACHE_VARS!r}]))"
)


def _cli_env(*argv: str, **exported: str) -> list:
    env = {k: v for k, v in os.environ.items() if k not in KERNEL_CACHE_VARS}
    env.update(exported, PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, "-c", PRINT_ENV, *argv], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_command_bounds_the_caches_in_its_process_before_any_work():
    # `labels` of a run that does not exist: it fails at once, after the caches were bounded
    assert _cli_env("labels", "/nonexistent/run") == [str(KERNEL_CACHE_ENTRIES)] * 2


def test_an_exported_value_wins():
    exported = {KERNEL_CACHE_VARS[0]: "8"}
    assert _cli_env("labels", "/nonexistent/run", **exported) == ["8", str(KERNEL_CACHE_ENTRIES)]
