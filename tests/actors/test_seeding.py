"""Seed streams of RolloutWorker: reproducible from (seed, worker id), new dungeons after a resume
(another run incarnation) and after a restart of the worker's process (another restart count).
Real NetHack; the NetHack seeds each reset used are read back from NLE."""

import numpy as np
import pytest

from actors.rollout import RolloutWorker
from learner.models import UniformPolicy

pytestmark = pytest.mark.nle

ENV_ID = "NetHackScoreExtendedActions-v1"


def _worker(**kwargs):
    return RolloutWorker(
        env_id=ENV_ID, num_envs=2, unroll_length=16, policy=UniformPolicy(28),
        max_episode_steps=4, **{"seed": 7, "worker_id": 1, **kwargs},
    )  # fmt: skip


def _episodes(make, seen, samples=2, restarts=None):
    """Seeds of every episode the worker `make()` builds starts, from its construction (the
    first episodes) through `samples` samples; with `restarts`, the worker is told that restart
    count first, as every sample request from the driver does."""
    start = len(seen)
    worker = make()
    if restarts is not None:
        worker.use_restart_streams(restarts)
    fragments = [worker.sample()[0] for _ in range(samples)]
    worker.close()
    return seen[start:], fragments


def test_same_seed_same_streams(nethack_seeds):
    a_seeds, a = _episodes(_worker, nethack_seeds)
    b_seeds, b = _episodes(_worker, nethack_seeds)
    assert len(a_seeds) >= 8  # the first resets and the episodes ended by the 4-step cap
    assert a_seeds == b_seeds
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x.obs["glyphs"], y.obs["glyphs"])
        np.testing.assert_array_equal(x.actions, y.actions)


def test_streams_differ_between_workers_and_episodes(nethack_seeds):
    first, _ = _episodes(lambda: _worker(worker_id=1), nethack_seeds)
    other, _ = _episodes(lambda: _worker(worker_id=2), nethack_seeds)
    assert len(set(first)) == len(first)  # no episode of a worker repeats another
    assert not set(first) & set(other)


def test_a_resumed_run_plays_new_dungeons(nethack_seeds):
    original, _ = _episodes(lambda: _worker(incarnation=0), nethack_seeds)
    resumed, _ = _episodes(lambda: _worker(incarnation=1), nethack_seeds)
    assert not set(original) & set(resumed)
    again, _ = _episodes(lambda: _worker(incarnation=1), nethack_seeds)
    assert again == resumed  # the resumed run is itself reproducible


def test_a_restarted_worker_process_plays_new_dungeons(nethack_seeds):
    before, _ = _episodes(_worker, nethack_seeds)
    # Ray restarts a dead worker with its original constructor arguments: its constructor
    # starts on the streams of restart 0 (those resets are abandoned before any step), then the
    # driver's sample request carries the worker's restart count.
    restarted, fragments = _episodes(_worker, nethack_seeds, restarts=1)
    first_resets = restarted[:2]
    assert first_resets == before[:2]  # the constructor's resets, never stepped
    played = restarted[2:]
    assert len(played) >= 8 and not set(before) & set(played)
    assert all(e.length <= 4 for f in fragments for e in f.episodes)
    assert _episodes(_worker, nethack_seeds, restarts=1)[0] == restarted  # reproducible
    # The same count (every ordinary sample request) leaves the streams alone.
    assert _episodes(_worker, nethack_seeds, restarts=0)[0] == before
