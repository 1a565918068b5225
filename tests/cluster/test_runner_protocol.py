"""Both runners implement the `Runner` protocol (cluster/runner.py), and each method returns what
the protocol documents, in a tiny real run: CartPole with the hashing reward model and the rules
judge, so the annotator's half runs too."""

from pathlib import Path

import pytest

from actors.messages import EpisodeStats, Fragment
from actors.observation_slots import SlotObservations
from cluster.components import env_spec
from cluster.config import load_config
from cluster.runner import Runner
from tests.waiting import wait_for

ROOT = Path(__file__).resolve().parents[2]


def _config(tmp_path, mode: str, *extra: str):
    return load_config(
        ROOT / "configs/cartpole.yaml",
        [
            f"run_dir={tmp_path}/run",
            f"mode={mode}",
            "rollout.num_workers=1",
            "env.num_envs_per_worker=2",
            "rollout.unroll_length=8",
            "learner.batch_size=16",
            "reward_model.name=hashing",
            "reward.intrinsic_coef=0.4",
            "annotator.backend=rules",
            *extra,
        ],
    )


def _exercise(runner, config, fragment_type) -> list:
    """Every method once, in the driver's order, checking its documented return type. Returns
    the handles of the fragments trained on."""
    assert isinstance(runner, Runner)
    assert runner.has_annotator is True
    runner.start([])
    runner.sync_weights()
    handles, episodes, steps = [], [], 0
    while len(handles) < 2:  # a batch is two fragments of 8 steps x 2 envs
        more, finished, n = runner.collect()
        handles += more
        episodes += finished
        steps += n
    assert steps >= 32 and all(isinstance(e, EpisodeStats) for e in episodes)
    assert all(isinstance(h, fragment_type) for h in handles)
    assert runner.can_train() is True
    runner.train(handles[:2])
    done = runner.finished_updates(wait=True)
    while not done:
        done = runner.finished_updates(wait=True)
    assert isinstance(done[0], dict) and "learner/policy_loss" in done[0]
    assert runner.updates_in_flight == 0 and runner.finished_updates() == []
    assert isinstance(runner.exchange_labels(), list)
    assert all(isinstance(line, str) for line in runner.poll_notices())
    assert runner.caption_table(5) == []  # CartPole has no captions
    assert _table_without_waiting(runner) == []
    state = runner.learner_state()
    assert state["version"] == 1
    runner.load_learner_state(state)
    assert isinstance(runner.annotator_state(), dict)
    runner.load_annotator_state(runner.annotator_state())
    assert isinstance(runner.annotator_backlog(), list)
    assert runner.resize(2) == "rollout workers: 1 -> 2"
    assert (runner.workers_alive, runner.workers_waiting, runner.restarts) == (2, 0, 0)
    stats = runner.stop_annotator()  # the run's end (the caller's close stops it again)
    assert stats["annotator/labels_total"] == 0.0  # CartPole has no captions to label
    return handles[:2]


def _table_without_waiting(runner):
    """caption_table(wait=False) returns None until both answers are in, then the table."""
    rows = None

    def answered():
        nonlocal rows  # kept: a call that returns the table ends its request
        rows = runner.caption_table(5, wait=False)
        return rows is not None, repr(rows)

    wait_for("the caption table asked for without waiting", answered, interval_s=0.05)
    return rows


def test_serial_runner_keeps_the_protocol(tmp_path):
    from cluster.serial import SerialRunner

    config = _config(tmp_path, "serial")
    runner = SerialRunner(config, env_spec(config))
    try:
        _exercise(runner, config, Fragment)
    finally:
        runner.close()


@pytest.mark.ray
@pytest.mark.slow
def test_ray_runner_keeps_the_protocol(tmp_path):
    import ray

    from cluster.placement import start_ray
    from cluster.ray_runner import RayRunner

    # Per-worker inference, with a CPU free for the resize (the shared kind is the next test).
    config = _config(tmp_path, "ray", "ray_num_cpus=4", "rollout.inference=worker")
    started = start_ray(config)
    runner = RayRunner(config, env_spec(config))
    try:
        trained = _exercise(runner, config, ray.ObjectRef)
        # One machine: the observations came through the worker's shared memory (the learner
        # read them: its update's metrics were checked; tests/actors/test_observation_slots.py
        # has the release).
        for fragment in ray.get(trained):
            assert isinstance(fragment.obs, SlotObservations)
            assert fragment.obs.available()
        # rollout.samples_in_flight (2) requested from each worker, the one added too
        assert sorted(w for w, *_ in runner._samples.values()) == [0, 0, 1, 1]
    finally:
        runner.close()
        if started:
            ray.shutdown()


@pytest.mark.ray
@pytest.mark.slow
def test_ray_runner_keeps_the_protocol_with_shared_inference(tmp_path):
    """rollout.inference=shared: the workers' steps are answered by the inference actor, which
    alone holds the weights; the protocol is the same (here with the observations through the
    object store)."""
    import ray

    from cluster.placement import start_ray
    from cluster.ray_runner import RayRunner

    config = _config(
        tmp_path, "ray", "ray_num_cpus=5", "rollout.inference=shared",
        "rollout.shared_observations=false",
    )  # fmt: skip
    started = start_ray(config)
    runner = RayRunner(config, env_spec(config))
    try:
        trained = _exercise(runner, config, ray.ObjectRef)
        # rollout.shared_observations=false: the observations came through the object store
        assert all(isinstance(f.obs, dict) for f in ray.get(trained))
        stats = runner.inference.stats()
        assert stats["actors"] == 1  # one machine: one node, one actor
        assert stats["requests"] >= 16  # one per step of a worker's envs: 2 fragments x 8 steps
        assert 1 <= stats["batches"] <= stats["requests"]
    finally:
        runner.close()
        if started:
            ray.shutdown()
