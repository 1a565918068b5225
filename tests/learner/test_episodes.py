"""Intrinsic returns are summed per episode across fragments of the same worker and env."""

import numpy as np

from learner.episodes import IntrinsicReturns
from tests.learner.test_batch import _fragment


def _with_done(fragment, done, worker_id):
    from dataclasses import replace

    return replace(fragment, terminated=np.asarray(done, bool), worker_id=worker_id)


def test_sums_span_fragments_and_workers():
    tracker = IntrinsicReturns()
    ids = [[0, 0], [0, 0], [0, 0]]
    a = _with_done(_fragment(["x"], ids, 0), [[0, 0], [1, 0], [0, 0]], worker_id=0)
    b = _with_done(_fragment(["x"], ids, 0), [[0, 0], [0, 0], [0, 0]], worker_id=1)
    intrinsic = np.array([[1, 10, 100, 1000], [2, 20, 200, 2000], [3, 30, 300, 3000]], np.float32)
    assert tracker.add([a, b], intrinsic) == [3.0]  # worker 0 env 0 ended after step 1
    a2 = _with_done(_fragment(["x"], ids, 0), [[1, 0], [0, 0], [0, 1]], worker_id=0)
    finished = tracker.add([a2], np.array([[4, 40], [5, 50], [6, 60]], np.float32))
    assert finished == [3.0 + 4.0, 10 + 20 + 30 + 40 + 50 + 60]
    state = tracker.state_dict()
    restored = IntrinsicReturns()
    restored.load_state_dict(state)
    assert restored.add([b], np.zeros((3, 2), np.float32)) == []
