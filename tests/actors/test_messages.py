"""The messages that cross process boundaries refuse to be built wrong, and a good one passes."""

import numpy as np
import pytest

from actors.messages import CaptionLabel, Fragment, PairLabel, PolicyWeights, Sightings


def _fragment(steps=3, envs=2, **changes):
    arrays = dict(
        obs={"vector": np.zeros((steps + 1, envs, 4), np.float32)},
        actions=np.zeros((steps, envs), np.int64),
        logp=np.zeros((steps, envs), np.float32),
        values=np.zeros((steps, envs), np.float32),
        rewards=np.zeros((steps, envs), np.float32),
        terminated=np.zeros((steps, envs), bool),
        truncated=np.zeros((steps, envs), bool),
        final_values=np.zeros((steps, envs), np.float32),
        caption_ids=np.full((steps, envs), -1, np.int32),
        caption_counts=np.ones((steps, envs), np.int32),
        captions=(),
        initial_state=np.zeros((envs, 0), np.float32),
        policy_version=0,
    )
    return Fragment(**{**arrays, **changes})


def test_a_consistent_fragment_is_built():
    fragment = _fragment()
    assert fragment.num_steps == 6 and fragment.done.shape == (3, 2)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"actions": np.zeros(6, np.int64)}, r"actions must be \[T, B\]"),
        ({"rewards": np.zeros((3, 3), np.float32)}, r"rewards is \(3, 3\)"),
        ({"obs": {"vector": np.zeros((3, 2, 4))}}, r"obs\['vector'\] is \(3, 2, 4\)"),
        ({"initial_state": np.zeros((3, 0))}, r"initial_state is \(3, 0\)"),
        ({"caption_ids": np.zeros((3, 2), np.int32)}, r"caption_ids reach 0; 0 captions"),
    ],
)
def test_an_inconsistent_fragment_is_refused(changes, message):
    with pytest.raises(ValueError, match=message):
        _fragment(**changes)


def test_policy_weights_are_numpy_with_a_version():
    weights = PolicyWeights({"w": np.ones(2, np.float32)}, 3)
    assert weights.version == 3
    with pytest.raises(ValueError, match="version must be >= 0"):
        PolicyWeights({}, -1)
    with pytest.raises(TypeError, match=r"state\['w'\] is list"):
        PolicyWeights({"w": [1.0]}, 0)


def test_sightings_are_a_read_only_mapping_of_positive_counts():
    seen = Sightings({"door": 2, "": 1})
    assert dict(seen) == {"door": 2, "": 1} and len(seen) == 2 and seen["door"] == 2
    for bad in ({"door": 0}, {"door": 1.5}, {3: 1}):
        with pytest.raises(ValueError, match="Sightings need"):
            Sightings(bad)


def test_labels_are_probabilities():
    assert CaptionLabel("door", 0.25).value == 0.25
    assert PairLabel("a", "b", 1.0).preference == 1.0
    for bad in (1.5, -0.1, float("nan")):
        with pytest.raises(ValueError, match=r"expected a value in \[0, 1\]"):
            CaptionLabel("door", bad)
        with pytest.raises(ValueError, match=r"expected a value in \[0, 1\]"):
            PairLabel("a", "b", bad)
