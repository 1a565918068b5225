"""The console says when a learned intrinsic reward goes quiet for many updates, once, and when it
comes back, once; nothing before the reward model has labels, nor without one."""

from cluster.reward_watch import QUIET_UPDATES, RewardWatch
from learner.metrics import REWARD_INTRINSIC_MEAN

ZERO, SOME = {REWARD_INTRINSIC_MEAN: 0.0}, {REWARD_INTRINSIC_MEAN: 0.02}


def _said(watch: RewardWatch, updates: list[dict], labels: float | None) -> list[str]:
    return [line for update in updates if (line := watch.update(update, labels))]


def test_quiet_for_many_updates_is_said_once_and_its_end_once():
    watch = RewardWatch()
    assert _said(watch, [SOME] * 5 + [ZERO] * (QUIET_UPDATES - 1), labels=102) == []
    (quiet,) = _said(watch, [ZERO] * 30, labels=102)
    assert quiet.startswith(f"no intrinsic reward in the last {QUIET_UPDATES} updates")
    assert "it has 102 labels" in quiet
    (back,) = _said(watch, [SOME, SOME], labels=140)
    assert back.startswith("the intrinsic reward is back") and "140 labels" in back
    assert _said(watch, [ZERO] * (QUIET_UPDATES - 1), labels=140) == []  # counting afresh
    assert len(_said(watch, [ZERO], labels=140)) == 1


def test_nothing_is_said_without_labels_or_without_an_intrinsic_reward():
    assert _said(RewardWatch(), [ZERO] * 50, labels=0) == []  # before the first labels
    assert _said(RewardWatch(), [ZERO] * 50, labels=None) == []  # no learned reward model
    assert _said(RewardWatch(), [{}] * 50, labels=100) == []  # extrinsic only: no such metric
