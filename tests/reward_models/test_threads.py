"""A learned reward model trained in one thread (add_labels, as the Ray learner runs it) while
another scores captions and checkpoints it: no step is lost, every checkpoint is one moment of
the model, and a reward pass waits for a step or two, not for the whole delivery."""

from __future__ import annotations

import threading

import pytest

from actors.messages import CaptionLabel, PairLabel
from reward_models import ClassificationRewardModel, RankingRewardModel

SMALL = dict(embed_dim=16, channels=32, text_dim=64)
STEPS = 60


def _classification():
    model = ClassificationRewardModel(
        lr=1e-3, batch_size=128, steps_per_label_batch=STEPS, mlp_sizes=(64,), seed=0, **SMALL
    )
    labels = [CaptionLabel(f"you see caption number {i}", float(i % 2)) for i in range(100)]
    return model, labels


def _ranking():
    model = RankingRewardModel(
        lr=1e-3, batch_size=128, steps_per_label_batch=STEPS, head_sizes=(64,), seed=0, **SMALL
    )
    labels = [PairLabel(f"caption {i}", f"caption {i + 1}", float(i % 2)) for i in range(100)]
    return model, labels


@pytest.mark.parametrize("build", [_classification, _ranking])
def test_labels_train_in_one_thread_while_another_scores_and_checkpoints(build):
    model, labels = build()
    model.add_labels(labels[:50])  # steps already taken, so the rewards are the net's
    first = model.gradient_steps
    trainer = threading.Thread(target=model.add_labels, args=(labels[50:],))
    trainer.start()
    captions = [f"you see caption number {i}" for i in range(40)]
    waits, checkpoints = [], 0
    while trainer.is_alive() or checkpoints == 0:
        state = model.state_dict()
        adam = state["optimizer"]["state"]
        assert all(int(s["step"]) == state["gradient_steps"] for s in adam.values())
        checkpoints += 1
        before = model.gradient_steps
        rewards = model.rewards(captions)
        waits.append(model.gradient_steps - before)
        assert rewards.shape == (len(captions),)
    trainer.join()
    assert model.gradient_steps == first + STEPS // 2  # 50 labels earn half a batch's steps
    # The step under way, this pass, then a step or two before the count is read (the count
    # is read outside the lock); without a first-come lock a pass can wait out the delivery.
    assert max(waits) <= 3, waits
    restored, _ = build()
    restored.load_state_dict(model.state_dict())
    assert restored.gradient_steps == model.gradient_steps
