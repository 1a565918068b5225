"""Says when a learned intrinsic reward has gone quiet: a reward model that rewards none of the
captions of many updates in a row (ONI's classifier before it separates its labels: trained
without label balancing on mostly negative labels, its P(helpful) sits below 0.5 for every
caption), and again when it comes back. The console's r_int is a mean over the last episodes,
so it goes on showing the reward for a while after the model has stopped giving any."""

from __future__ import annotations

from learner.metrics import REWARD_INTRINSIC_MEAN
from reward_models.base import DATASET_SIZE, GRADIENT_STEPS

QUIET_UPDATES = 10  # updates in a row without intrinsic reward before it is said
BACK_UPDATES = 3  # updates in a row with some before its return is said (no flapping)


class RewardWatch:
    """Fed every finished update's metrics; returns the line to say, or None."""

    def __init__(self, quiet_updates: int = QUIET_UPDATES):
        self.quiet_updates = quiet_updates
        self._zeros = self._rewarded = 0
        self._said_quiet = False

    def update(self, metrics: dict[str, float], labels: float | None) -> str | None:
        """`metrics`: one update's; `labels`: the reward model's dataset size now (None: no
        learned reward model). Nothing is said before the model has labels to learn from."""
        reward = metrics.get(REWARD_INTRINSIC_MEAN)
        if reward is None or not labels:
            return None
        if reward != 0:
            self._zeros, self._rewarded = 0, self._rewarded + 1
            if self._said_quiet and self._rewarded >= BACK_UPDATES:
                self._said_quiet = False
                return (
                    "the intrinsic reward is back: the reward model rewards captions again "
                    f"({labels:,.0f} labels)"
                )
            return None
        self._zeros, self._rewarded = self._zeros + 1, 0
        if self._zeros < self.quiet_updates or self._said_quiet:
            return None
        self._said_quiet = True
        return (
            f"no intrinsic reward in the last {self._zeros} updates: the reward model rewards none "
            f"of the captions it sees (it has {labels:,.0f} labels; r_int on the "
            "status line is a mean over past episodes); more labels may change that"
        )


def dataset_size(latest: dict[str, float]) -> float | None:
    """The reward model's dataset size among the logged scalars; None without a learned reward
    model, or while one that trains has taken no gradient step yet (its reward is 0 then)."""
    if latest.get(GRADIENT_STEPS, 1) == 0:
        return None
    return latest.get(DATASET_SIZE)
