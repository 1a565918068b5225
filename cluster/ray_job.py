"""`rogueray train` as the entrypoint of `ray job submit`: what differs from a driver started by
hand on a machine of its own.

- Ray's job supervisor runs the entrypoint inside the cluster with `RAY_ADDRESS` set to the
  cluster's GCS address, and with the job's runtime env (its `working_dir`, the code shipped with
  the job) in `RAY_JOB_CONFIG_JSON_ENV_VAR`. A run whose `ray_address` is unset joins that
  cluster (as `ray.init()` does) instead of starting a second Ray beside it, which `ray.init`
  would refuse anyway (`num_cpus` cannot be given when connecting).
- The job's working directory is a temporary copy of the shipped code, unpacked under Ray's
  session directory and deleted when Ray's package cache is cleaned: a relative `run_dir` there
  would put checkpoints where nobody finds them and where the next job with the same code would
  resume them. In a job, a relative `run_dir` is taken relative to the home directory instead.
- The console is a file (the job's log), not a terminal: cluster/console.py prints plain status
  lines there, and `ray job logs --follow` shows them as they come.

Nothing here imports Ray: the CLI resolves paths before anything starts.
"""

from __future__ import annotations

import os
from pathlib import Path

JOB_CONFIG_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"  # set by Ray's job supervisor for the entrypoint
ADDRESS_ENV = "RAY_ADDRESS"


def in_ray_job() -> bool:
    """Whether this process is the entrypoint of a Ray job (`ray job submit`)."""
    return JOB_CONFIG_ENV in os.environ


def joined_address(ray_address: str | None) -> str | None:
    """The Ray cluster a run joins: `ray_address` when set, else `RAY_ADDRESS` from the
    environment (set for every Ray job's entrypoint), else None (start a local Ray).

    A `RAY_ADDRESS` that is an http(s) URL is the dashboard's, which `ray job submit` reads and a
    driver cannot connect to: it is ignored, as it would be for a driver started by hand.
    """
    if ray_address is not None:
        return ray_address
    env = os.environ.get(ADDRESS_ENV, "").strip()
    if not env or env.startswith(("http://", "https://")):
        return None
    return env


def job_run_dir(run_dir: str) -> tuple[str, str | None]:
    """`run_dir` as a Ray job's entrypoint must use it, and a console line saying why it changed
    (None when unchanged): a relative path is taken relative to the home directory, not to the
    job's temporary working directory. Outside a Ray job, `run_dir` is returned as it is."""
    path = Path(run_dir).expanduser()
    if not in_ray_job() or path.is_absolute():
        return run_dir, None
    resolved = str(Path.home() / path)
    return resolved, (
        f"[rogueray] running as a Ray job: run_dir {run_dir} is relative, so it is {resolved} "
        f"(the job's working directory {os.getcwd()} is a temporary copy of the code)"
    )
