"""A RayRunner started on a local Ray for tests that drive it by hand (kill a process, resize)."""

import contextlib

from cluster.components import env_spec


@contextlib.contextmanager
def started_runner(config, collects: int = 0):
    """Yield a `RayRunner` for `config`, started, given weights and `collects` samples in, on a
    Ray started here unless one runs; close it and that Ray afterwards."""
    import ray

    from cluster.placement import start_ray
    from cluster.ray_runner import RayRunner

    started, runner = start_ray(config), None
    try:
        runner = RayRunner(config, env_spec(config))
        runner.start()
        runner.sync_weights()
        for _ in range(collects):
            runner.collect()
        yield runner
    finally:
        if runner is not None:
            runner.close()
        if started:
            ray.shutdown()
