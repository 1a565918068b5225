"""Observations through a worker's shared-memory slots (actors/observation_slots.py): the same
fragments as ordinary arrays, read in another process from a pickle of a few kB, handed back by
`release` and by the learner's update, ordinary arrays when every slot is busy, and a fragment
whose worker is gone left out of an update rather than failing it."""

import pickle
import subprocess
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from actors.envs import observation_spec
from actors.observation_slots import (
    ObservationsLost,
    SlotObservations,
    observations_available,
    release_observations,
)
from actors.rollout import RolloutWorker, SampleAborted
from learner import metrics as lm
from learner.models import UniformPolicy, build_policy

ROOT = Path(__file__).resolve().parents[2]
NETHACK = "NetHackScoreExtendedActions-v1"

_READ_IN_CHILD = """
import pickle, sys
import numpy as np
fragment = pickle.loads(sys.stdin.buffer.read())
np.savez(sys.argv[1], **dict(fragment.obs))
if sys.argv[2] == "release":
    fragment.obs.release()
"""


_SAMPLE_AND_EXIT = """
import pickle, sys
from actors.rollout import RolloutWorker, SampleAborted
from learner.models import UniformPolicy
worker = RolloutWorker(env_id="CartPole-v1", num_envs=3, unroll_length=8, policy=UniformPolicy(2))
worker.share_observations(2)
blob = pickle.dumps(worker.sample()[0])
sys.stdout.buffer.write(len(blob).to_bytes(4, "little") + blob)
sys.stdout.flush()
sys.stdin.readline()  # exits when told
"""


class _WorkerProcess:
    """A worker process (3 CartPole envs, 2 slots) that hands over one fragment, then exits when
    `exit` is called."""

    def __init__(self):
        self._process = subprocess.Popen(
            [sys.executable, "-c", _SAMPLE_AND_EXIT], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, cwd=ROOT,
        )  # fmt: skip
        size = int.from_bytes(self._process.stdout.read(4), "little")
        self.fragment = pickle.loads(self._process.stdout.read(size))

    def exit(self) -> None:
        self._process.communicate(b"\n", timeout=60)
        assert self._process.returncode == 0


def _fragment_of_a_gone_worker():
    """A fragment pickled by a worker process that has exited since."""
    worker = _WorkerProcess()
    worker.exit()
    return worker.fragment


def _worker(slots: int | None, env_id=NETHACK, policy=None, **kwargs) -> RolloutWorker:
    worker = RolloutWorker(
        env_id=env_id,
        num_envs=3,
        unroll_length=8,
        policy=policy or UniformPolicy(28 if env_id == NETHACK else 2),
        seed=7,
        max_episode_steps=12,
        **kwargs,
    )
    if slots:
        worker.share_observations(slots)
    return worker


def _read_in_child(fragment, tmp_path: Path, release: bool) -> dict[str, np.ndarray]:
    out = tmp_path / "obs.npz"
    subprocess.run(
        [sys.executable, "-c", _READ_IN_CHILD, str(out), "release" if release else "keep"],
        input=pickle.dumps(fragment),
        check=True,
        cwd=ROOT,
    )
    with np.load(out) as saved:
        return dict(saved)


@pytest.mark.nle
def test_slot_fragments_equal_array_fragments_and_read_elsewhere(tmp_path):
    shared, plain = _worker(4, unrolls_per_sample=2), _worker(None, unrolls_per_sample=2)
    for _ in range(3):  # episodes of 12 steps: resets and time-limit cuts inside the slots
        got, want = shared.sample()[0], plain.sample()[0]
        assert isinstance(got.obs, SlotObservations) and isinstance(want.obs, dict)
        assert list(got.obs) == list(want.obs)
        for key in want.obs:
            np.testing.assert_array_equal(got.obs[key], want.obs[key])
        np.testing.assert_array_equal(got.final_values, want.final_values)
        blob = pickle.dumps(got)
        assert len(blob) < len(pickle.dumps(want)) / 20  # the observations stay behind
        child = _read_in_child(got, tmp_path, release=True)
        for key in want.obs:
            np.testing.assert_array_equal(child[key], want.obs[key])
        assert not got.obs.busy  # the child's release reached the worker's slot
    assert shared.slots.busy == 0


@pytest.mark.nle
def test_a_slot_taken_again_feeds_the_policy_this_samples_observations():
    # The worker makes a slot's views and policy inputs once and keeps them: with a network
    # that reads its inputs, the actions and values must still be the arrays' ones, sample by
    # sample in the same slot.
    torch.manual_seed(3)
    policy = build_policy("nethack", observation_spec(NETHACK), 28, 16, recurrent=True)
    shared = _worker(2, unrolls_per_sample=2, policy=policy)
    plain = _worker(None, unrolls_per_sample=2, policy=policy)
    for _ in range(3):
        got, want = shared.sample()[0], plain.sample()[0]
        assert got.obs.address.slot == 0  # released below: the same slot every time
        np.testing.assert_array_equal(got.obs["glyphs"], want.obs["glyphs"])
        np.testing.assert_array_equal(got.actions, want.actions)
        np.testing.assert_array_equal(got.values, want.values)
        np.testing.assert_array_equal(got.logp, want.logp)
        got.obs.release()


def test_busy_slots_fall_back_to_arrays_and_release_frees_them(tmp_path):
    worker = _worker(2, env_id="CartPole-v1")
    first, second, third = (worker.sample()[0] for _ in range(3))
    assert isinstance(first.obs, SlotObservations) and isinstance(second.obs, SlotObservations)
    assert isinstance(third.obs, dict)  # both slots wait to be released
    assert worker.slots.busy == 2
    kept = first.obs["vector"].copy()
    release_observations(third.obs)  # arrays: nothing to do
    _read_in_child(first, tmp_path, release=True)
    assert worker.slots.busy == 1
    fourth = worker.sample()[0]
    assert fourth.obs.address.slot == first.obs.address.slot  # the freed slot, written again
    assert not np.array_equal(first.obs["vector"], kept)  # as `release` says


class _PolicyThatFailsOnItsFifthCall(UniformPolicy):
    """Test double: a policy whose answer is lost part way through a sample (as a shared
    inference actor's death makes RemotePolicy raise)."""

    calls = 0

    def act(self, *args):
        self.calls += 1
        if self.calls == 5:
            raise RuntimeError("the policy's actor is gone")
        return super().act(*args)


def test_a_sample_that_fails_part_way_frees_its_slot():
    worker = RolloutWorker(
        env_id="CartPole-v1", num_envs=3, unroll_length=8, policy=_PolicyThatFailsOnItsFifthCall(2)
    )
    worker.share_observations(2)
    with pytest.raises(RuntimeError, match="actor is gone"):
        worker.sample()
    assert worker.slots.busy == 0
    with pytest.raises(SampleAborted):  # its envs and books stopped part way
        worker.sample()
    worker.use_restart_streams(1)  # as the runner asks next
    fragment = worker.sample()[0]
    assert isinstance(fragment.obs, SlotObservations) and fragment.obs.address.slot == 0


def test_observations_of_a_gone_worker_are_lost_not_read():
    lost = _fragment_of_a_gone_worker().obs
    assert not observations_available(lost)
    with pytest.raises(ObservationsLost, match=f"/proc/{lost.address.pid}/fd/"):
        lost["vector"]
    worker = _worker(2, env_id="CartPole-v1")
    assert observations_available(worker.sample()[0].obs)
    assert observations_available({"vector": np.zeros((9, 3, 4))})


def test_learner_releases_slots_and_leaves_lost_fragments_out(tmp_path):
    from cluster.components import env_spec, make_learner
    from cluster.config import load_config

    config = load_config(
        ROOT / "configs/cartpole.yaml",
        [f"run_dir={tmp_path}/run", "mode=serial", "env.num_envs_per_worker=3",
         "rollout.unroll_length=8", "learner.batch_size=24"],
    )  # fmt: skip
    learner = make_learner(config, env_spec(config))
    worker = _worker(4, env_id="CartPole-v1")
    fragments = [pickle.loads(pickle.dumps(worker.sample()[0])) for _ in range(2)]
    assert worker.slots.busy == 2
    metrics = learner.update(fragments[0])
    assert lm.POLICY_LOSS in metrics and lm.FRAGMENTS_LOST not in metrics
    assert worker.slots.busy == 1

    lost = _fragment_of_a_gone_worker()
    metrics = learner.update(fragments[1], lost)
    assert metrics[lm.FRAGMENTS_LOST] == 1.0 and lm.POLICY_LOSS in metrics
    assert worker.slots.busy == 0
    assert learner.update(lost) == {lm.FRAGMENTS_LOST: 1.0}


def test_a_reused_pid_and_fd_is_not_taken_for_the_worker():
    """The file at /proc/<pid>/fd/<fd> must carry the worker's token: after its pid is reused,
    that path may name another file."""
    ours = _worker(2, env_id="CartPole-v1").sample()[0].obs
    other = _worker(2, env_id="CartPole-v1").sample()[0].obs
    elsewhere = SlotObservations(replace(ours.address, fd=other.address.fd))
    with pytest.raises(ObservationsLost, match="another file now"):
        elsewhere["vector"]
    with tempfile.TemporaryFile() as not_a_worker:  # no memfd at all: never opened
        elsewhere = SlotObservations(replace(ours.address, fd=not_a_worker.fileno()))
        with pytest.raises(ObservationsLost, match="another file now"):
            elsewhere["vector"]


def test_a_worker_file_that_cannot_be_opened_stops_with_the_way_out(monkeypatch):
    """Not a lost fragment: every fragment would fail the same way (as root nothing is denied,
    so the refusal is simulated at os.open)."""
    import actors.observation_slots as slots

    fragment = _worker(2, env_id="CartPole-v1").sample()[0]
    elsewhere = SlotObservations(fragment.obs.address)  # read as a consumer would

    def refuse(path, flags):
        raise PermissionError(13, "Permission denied", path)

    monkeypatch.setattr(slots.os, "open", refuse)
    with pytest.raises(OSError, match="rollout.shared_observations=false"):
        observations_available(elsewhere)


def test_a_slot_read_before_its_worker_died_stays_readable_and_releasable():
    """A worker restarted: the learner holds a fragment of the old process (read before its
    death) and one of the new; reading the new must not cost the old one its mapping, and
    releasing the old one after the death must not fail the update."""
    old = _WorkerProcess()
    before = dict(old.fragment.obs)  # mapped here while the process lives
    kept = {key: value.copy() for key, value in before.items()}
    old.exit()
    new = _WorkerProcess()
    assert new.fragment.obs.available()
    for key, value in kept.items():
        np.testing.assert_array_equal(old.fragment.obs[key], value)
    release_observations(old.fragment.obs)  # the dead process's slot: nothing to hand back to
    release_observations(new.fragment.obs)
    assert not new.fragment.obs.busy
    new.exit()
