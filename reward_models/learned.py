"""What the classification and ranking models share: a char-CNN network trained online on the
labels with Adam, on ONI's schedule, evaluated per distinct caption, and resumable."""

from __future__ import annotations

import copy
from abc import abstractmethod
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from reward_models.base import (
    ACCURACY,
    DATASET_SIZE,
    GRADIENT_STEPS,
    LOSS,
    Label,
    RewardModel,
    check_option,
)
from reward_models.fair_lock import FairLock
from reward_models.text_encoder import encode_captions

INFERENCE_CHUNK = 1024
"""Captions per forward pass when computing rewards, bounding activation memory."""


class LearnedRewardModel(RewardModel):
    """A network r(caption) trained online; subclasses define the network output and the loss.

    Schedule (ONI section 4.2): while the dataset holds fewer than `switch_dataset_size` items,
    every `label_batch_size` labels that arrive earn `steps_per_label_batch` gradient steps, run
    by the `add_labels` call that brings them; from then on labels are only stored and each
    `train_iteration` runs one step. ONI ran its 32 steps per LLM batch of up to 100 labels
    (`llm_batch_size`); here labels arrive in deliveries of any size (every label exchange), so a
    delivery of n labels earns min(n, label_batch_size) / label_batch_size of a batch's steps,
    the fraction carried to the next. The steps per label are then ONI's whatever the judge's
    speed, and one delivery never runs more than `steps_per_label_batch`, so a judge faster than
    the learner cannot stall it. Each step draws a fresh random batch of
    `batch_size` distinct items (all of them when fewer). Until the first gradient step, r_int is 0
    for every caption: ONI used its untrained net, which at PyTorch's default initialisation gives
    nearly the same output for every caption, so its binary reward was 0 or 1 for all of them.

    Threads: `add_labels` and its gradient steps may run in one thread while the rest runs in
    another, as ONI ran the label-driven steps in the learner's main thread beside its training
    thread (reference section 4.2); the Ray learner gives `add_labels` a concurrency group of its
    own. A first-come, first-served lock guards the dataset, the weights and the counters, and
    is taken one gradient step at a time, so a reward pass waits for one step at most.
    """

    def __init__(
        self,
        *,
        net: nn.Module,
        lr: float,
        batch_size: int,
        steps_per_label_batch: int,
        label_batch_size: int,
        switch_dataset_size: int,
        max_grad_norm: float | None,
        device: str,
        seed: int,
    ) -> None:
        check_option("lr", lr > 0, lr, "a positive float")
        check_option("batch_size", batch_size >= 1, batch_size, "an int >= 1")
        check_option(
            "steps_per_label_batch", steps_per_label_batch >= 0, steps_per_label_batch, "int >= 0"
        )
        check_option("label_batch_size", label_batch_size >= 1, label_batch_size, "an int >= 1")
        check_option(
            "switch_dataset_size", switch_dataset_size >= 0, switch_dataset_size, "an int >= 0"
        )
        check_option(
            "max_grad_norm", max_grad_norm is None or max_grad_norm > 0, max_grad_norm, "> 0"
        )
        try:
            self.device = torch.device(device)
        except RuntimeError as error:
            expected = 'a torch device such as "cpu" or "cuda:0"'
            raise ValueError(
                f"reward model option device={device!r} is invalid: {expected}"
            ) from error
        self.net = net.to(self.device).eval()
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=lr)
        self.batch_size = batch_size
        self.steps_per_label_batch = steps_per_label_batch
        self.label_batch_size = label_batch_size
        # Steps earned by labels and not run yet, in 1/label_batch_size steps (exact integers).
        self._earned = 0
        self.switch_dataset_size = switch_dataset_size
        self.max_grad_norm = max_grad_norm
        self.generator = torch.Generator().manual_seed(seed)  # batch sampling only
        self.gradient_steps = 0
        self._lock = FairLock()

    # --- what subclasses define --------------------------------------------------------------
    @abstractmethod
    def _store(self, labels: Sequence[Label]) -> None:
        """Check and add labels to the dataset (relabelling items already there)."""

    @abstractmethod
    def _batch_loss(self, indices: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        """Loss on dataset items `indices` [B]; also (correct, counted) for the accuracy."""

    @abstractmethod
    def _outputs_to_rewards(self, outputs: torch.Tensor) -> torch.Tensor:
        """Network outputs for U captions -> r_int [U]."""

    @abstractmethod
    def _dataset_state(self) -> dict[str, Any]: ...

    @abstractmethod
    def _load_dataset_state(self, state: dict[str, Any]) -> None: ...

    # --- shared machinery ----------------------------------------------------------------------
    def tokens(self, captions: Sequence[str]) -> torch.Tensor:
        """Captions -> int64 [N, 256] byte tensor on the model's device."""
        return torch.from_numpy(encode_captions(captions)).to(self.device)

    def _unique_rewards(self, captions: list[str]) -> np.ndarray:
        with self._lock:
            if self.gradient_steps == 0:
                return np.zeros(len(captions), dtype=np.float32)
            return self._outputs_to_rewards(self._outputs(captions)).cpu().numpy()

    def outputs(self, captions: Sequence[str]) -> torch.Tensor:
        """Network outputs in eval mode, in chunks: [N, ...] for N captions."""
        with self._lock:
            return self._outputs(captions)

    @torch.no_grad()
    def _outputs(self, captions: Sequence[str]) -> torch.Tensor:
        chunks = [
            self.net(self.tokens(captions[start : start + INFERENCE_CHUNK]))
            for start in range(0, len(captions), INFERENCE_CHUNK)
        ]
        return torch.cat(chunks).float()

    def add_labels(self, labels: Sequence[Label]) -> dict[str, float]:
        with self._lock:
            if not labels:
                return {DATASET_SIZE: float(self.dataset_size)}
            self._store(labels)
            if self.dataset_size >= self.switch_dataset_size:
                return {DATASET_SIZE: float(self.dataset_size)}
            self._earned += self.steps_per_label_batch * min(len(labels), self.label_batch_size)
            steps, self._earned = divmod(self._earned, self.label_batch_size)
        return self._train(steps)

    @property
    def step_credit(self) -> float:
        """Gradient steps earned by labels and not run yet, in [0, 1)."""
        return self._earned / self.label_batch_size

    def train_iteration(self) -> dict[str, float]:
        return self._train(1 if self.dataset_size >= self.switch_dataset_size else 0)

    def _train(self, steps: int) -> dict[str, float]:
        metrics = {DATASET_SIZE: float(self.dataset_size)}
        if steps == 0 or self.dataset_size == 0:
            return metrics
        losses, correct, counted = [], 0, 0
        for _ in range(steps):
            with self._lock:
                loss, batch_correct, batch_counted = self._step()
            losses.append(loss)
            correct, counted = correct + batch_correct, counted + batch_counted
        metrics[LOSS] = float(np.mean(losses))
        metrics[GRADIENT_STEPS] = float(self.gradient_steps)
        if counted:
            metrics[ACCURACY] = correct / counted
        return metrics

    def _step(self) -> tuple[float, int, int]:
        """One gradient step on a fresh random batch (the net in train mode only within it);
        returns the loss and (correct, counted). The caller holds the lock."""
        self.net.train()
        indices = torch.randperm(self.dataset_size, generator=self.generator)
        loss, correct, counted = self._batch_loss(indices[: self.batch_size])
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.max_grad_norm is not None:
            nn.utils.clip_grad_norm_(self.net.parameters(), self.max_grad_norm)
        self.optimizer.step()
        self.gradient_steps += 1
        self.net.eval()
        return loss.item(), correct, counted

    def state_dict(self) -> dict[str, Any]:
        with self._lock:
            return copy.deepcopy(
                {
                    "net": self.net.state_dict(),
                    "optimizer": self.optimizer.state_dict(),
                    "generator": self.generator.get_state(),
                    "gradient_steps": self.gradient_steps,
                    "step_credit": self.step_credit,
                    "dataset": self._dataset_state(),
                }
            )

    def load_state_dict(self, state: dict[str, Any]) -> None:
        with self._lock:
            self.net.load_state_dict(state["net"])
            # Adam would otherwise keep the caller's moment tensors and update them in place.
            self.optimizer.load_state_dict(copy.deepcopy(state["optimizer"]))
            self.generator.set_state(state["generator"])
            self.gradient_steps = int(state["gradient_steps"])
            # Absent from checkpoints written before it existed: nothing carried.
            self._earned = round(float(state.get("step_credit", 0.0)) * self.label_batch_size)
            self._load_dataset_state(copy.deepcopy(state["dataset"]))
