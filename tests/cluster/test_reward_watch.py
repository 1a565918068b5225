"""The console says when a learned intrinsic reward goes quiet for many updates, once, and when it
is back for a few updates in a row, once; nothing before the reward model has labels and a
gradient step, nor without one."""

from cluster.reward_watch import BACK_UPDATES, QUIET_UPDATES, RewardWatch, dataset_size
from learner.metrics import REWARD_INTRINSIC_MEAN
from reward_models.base import DATASET_SIZE, GRADIENT_STEPS

ZERO, SOME = {REWARD_INTRINSIC_MEAN: 0.0}, {REWARD_INTRINSIC_MEAN: 0.02}


def _said(watch: RewardWatch, updates: list[dict], labels: float | None) -> list[str]:
    return [line for update in updates if (line := watch.update(update, labels))]


def test_quiet_for_many_updates_is_said_once_and_its_end_once():
    watch = RewardWatch()
    assert _said(watch, [SOME] * 5 + [ZERO] * (QUIET_UPDATES - 1), labels=102) == []
    (quiet,) = _said(watch, [ZERO] * 30, labels=102)
    assert quiet.startswith(f"no intrinsic reward in the last {QUIET_UPDATES} updates")
    assert "it has 102 labels" in quiet
    # a rare rewarded caption now and then is not a return: no line for it, nor a second "quiet"
    assert _said(watch, ([SOME] * (BACK_UPDATES - 1) + [ZERO] * 20) * 3, labels=120) == []
    (back,) = _said(watch, [SOME] * BACK_UPDATES, labels=140)
    assert back.startswith("the intrinsic reward is back") and "140 labels" in back
    assert _said(watch, [ZERO] * (QUIET_UPDATES - 1), labels=140) == []  # counting afresh
    assert len(_said(watch, [ZERO], labels=140)) == 1


def test_nothing_is_said_without_labels_or_a_learned_reward_model():
    assert _said(RewardWatch(), [ZERO] * 50, labels=0) == []  # before the first labels
    assert _said(RewardWatch(), [ZERO] * 50, labels=None) == []  # none, or not trained yet


def test_the_dataset_counts_once_a_trained_model_has_taken_a_step():
    assert dataset_size({}) is None  # no learned reward model
    assert dataset_size({DATASET_SIZE: 3.0, GRADIENT_STEPS: 0.0}) is None  # its reward is 0
    assert dataset_size({DATASET_SIZE: 3.0, GRADIENT_STEPS: 32.0}) == 3.0
    assert dataset_size({DATASET_SIZE: 40.0}) == 40.0  # hashing: labels looked up, no steps
