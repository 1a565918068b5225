"""EpisodeTally, which keeps rows per step and accounts for a whole unroll at once, against the
obvious step-by-step bookkeeping: the same rewards, finished episodes, caption ids and
per-episode caption counts, with episodes running across unroll boundaries."""

import weakref

import numpy as np

from actors.episodes import EpisodeTally
from actors.messages import EpisodeStats

CAPTIONS = ("You see here 5 gold pieces.", "It's a wall.", "", "You kill the newt!", None)


class _StepByStep:
    """The reference: one step of one env at a time, as a plain loop would keep the books."""

    def __init__(self, num_envs, normalize=None):
        self.normalize = normalize
        self.totals = [[0.0, 0, 0, {}] for _ in range(num_envs)]

    def unroll(self, rewards, infos, done, truncated):
        index, finished = {}, []
        ids = np.full(done.shape, -1, np.int32)
        counts = np.zeros(done.shape, np.int32)
        for t in range(done.shape[0]):
            for i in range(done.shape[1]):
                totals, info = self.totals[i], infos[t][i]
                totals[0] += float(rewards[t][i])
                totals[1] += 1
                totals[2] = max(totals[2], int(info.get("depth", 0)))
                caption = info.get("caption")
                if caption is not None:
                    if self.normalize is not None:
                        caption = self.normalize(caption)
                    totals[3][caption] = totals[3].get(caption, 0) + 1
                    ids[t, i] = index.setdefault(caption, len(index))
                    counts[t, i] = totals[3][caption]
                if done[t, i]:
                    success = info.get("success")
                    finished.append(
                        EpisodeStats(
                            return_extrinsic=totals[0],
                            length=totals[1],
                            success=None if success is None else bool(success),
                            max_depth=totals[2] or None,
                            truncated=bool(truncated[t, i]),
                        )
                    )
                    self.totals[i] = [0.0, 0, 0, {}]
        return finished, ids, counts, tuple(index)


def _unroll(rng, steps, num_envs):
    """Random rows as envs return them: float and float32 rewards, info dicts with captions
    (some missing), depths and sometimes success (which counts on an episode's last step)."""
    done = rng.random((steps, num_envs)) < 0.08
    truncated = done & (rng.random((steps, num_envs)) < 0.5)
    rewards = [
        [float(r) if k % 2 else np.float32(r) for k, r in enumerate(row)]
        for row in rng.normal(size=(steps, num_envs)) / 3
    ]
    infos = []
    for _t in range(steps):
        row = []
        for _i in range(num_envs):
            info = {"depth": int(rng.integers(1, 5))}
            caption = CAPTIONS[rng.integers(len(CAPTIONS))]
            if caption is not None:
                info["caption"] = caption
            if rng.random() < 0.5:  # read at episode ends only, wherever an env reports it
                info["success"] = bool(rng.random() < 0.5)
            row.append(info)
        infos.append(row)
    return rewards, infos, done, truncated


def _check_against_reference(normalize, seed):
    rng = np.random.default_rng(seed)
    tally, reference = EpisodeTally(5, normalize), _StepByStep(5, normalize)
    ended = []
    for _ in range(6):  # episodes run across unrolls
        rewards, infos, done, truncated = _unroll(rng, 9, 5)
        for reward_row, info_row, done_row in zip(rewards, infos, done, strict=True):
            # As a worker calls it: told whether any episode ended on the step.
            tally.add_step(tuple(reward_row), tuple(info_row), bool(done_row.any()))
        got = tally.end_unroll(done, truncated)
        finished, ids, counts, captions = reference.unroll(rewards, infos, done, truncated)
        np.testing.assert_array_equal(got.rewards, np.array(rewards, np.float32))
        assert got.finished == finished  # exact: returns are summed in the same order
        assert all(type(e.return_extrinsic) is float for e in got.finished)
        np.testing.assert_array_equal(got.caption_ids, ids)
        np.testing.assert_array_equal(got.caption_counts, counts)
        assert got.captions == captions
        assert got.caption_ids.dtype == got.caption_counts.dtype == np.int32
        ended += finished
    assert len(ended) > 5  # the draw gives about 20 ends, some cut, some with success
    assert any(e.truncated for e in ended) and any(e.success is not None for e in ended)


def test_matches_step_by_step_bookkeeping():
    for seed in range(5):
        _check_against_reference(None, seed)


def test_normalized_captions_are_counted_under_their_normal_form():
    for seed in range(3):
        _check_against_reference(lambda c: c.replace("5", "N").strip(), seed)


def test_an_unroll_without_ends_carries_every_total_over():
    tally = EpisodeTally(2)
    no_end = np.zeros((3, 2), bool)
    info = {"caption": "Hello", "depth": 2}
    for _ in range(3):
        tally.add_step((1.0, 0.5), (info, info))
    tally.end_unroll(no_end, no_end)
    tally.add_step((1.0, 0.5), (info, info))
    got = tally.end_unroll(np.array([[True, False]]), np.zeros((1, 2), bool))
    assert got.finished == [EpisodeStats(4.0, 4, None, 2, False)]
    np.testing.assert_array_equal(got.caption_counts, [[4, 4]])


class _Info(dict):
    """An info dict that a weak reference can watch."""


def test_the_info_dicts_are_let_go_of_at_once():
    """Kept to the end of an unroll, a dict per env step would survive the garbage collector's
    young generations and bring on full collections in the worker process."""
    tally = EpisodeTally(2)
    infos = (_Info(caption="Hello", depth=1), _Info(caption="Bye", success=True))
    watch = [weakref.ref(info) for info in infos]
    tally.add_step((0.0, 1.0), infos)
    del infos
    assert all(ref() is None for ref in watch)
    got = tally.end_unroll(np.array([[False, True]]), np.zeros((1, 2), bool))
    assert got.finished == [EpisodeStats(1.0, 1, True, None, False)]
    assert got.captions == ("Hello", "Bye")
