"""`Learner`: APPO with V-trace targets on batches of fragments, on the GPU when present. A plain
class: `cluster/` makes it a Ray actor, serial mode calls it directly."""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import torch

from actors.messages import CaptionLabel, Fragment, PairLabel, PolicyWeights
from actors.observation_slots import observations_available, release_observations
from learner import metrics as lm
from learner.batch import Batch, collate
from learner.episodes import IntrinsicReturns
from learner.losses import appo_loss
from learner.memory_stats import heap_mb, rss_mb
from learner.reward import training_reward
from learner.vtrace import vtrace
from reward_models import NoRewardModel, RewardModel


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def memory_metrics() -> dict[str, float]:
    """This process's RSS and live heap now (MB), under the learner's metric names. `update` reads
    them at its end, the same point of every update, so their series over a run shows growth
    without the swing of one update's working set."""
    values = {lm.RSS_MB: rss_mb(), lm.HEAP_MB: heap_mb()}
    return {name: value for name, value in values.items() if value is not None}


class Learner:
    """Owns the policy's trainable copy, its optimiser and the update counter (policy version).

    `learner_config` is the run's LearnerConfig, `reward_config` its RewardConfig. The reward
    model lives here: it scores every batch's captions at train time (so old fragments are
    relabelled by the current model) and trains on the labels handed to `add_labels`.
    """

    def __init__(
        self,
        policy: torch.nn.Module,
        learner_config,
        reward_config,
        reward_model: RewardModel | None = None,
    ):
        self.config = learner_config
        self.reward_config = reward_config
        self.device = resolve_device(learner_config.device)
        self.policy = policy.to(self.device).train()
        self.optimizer = torch.optim.Adam(
            self.policy.parameters(), lr=learner_config.learning_rate, eps=learner_config.adam_eps
        )
        self.reward_model = reward_model or NoRewardModel()
        self.intrinsic_returns = IntrinsicReturns()
        self.version = 0
        self.samples_trained = 0

    def get_weights(self) -> PolicyWeights:
        """CPU numpy copies of the weights and their version, for the rollout workers."""
        weights = {k: v.detach().cpu().numpy() for k, v in self.policy.state_dict().items()}
        return PolicyWeights(weights, self.version)

    def update(self, *fragments: Fragment) -> dict[str, float]:
        """One APPO update on these fragments; returns scalar metrics.

        Observations in a rollout worker's shared-memory slot (actors/observation_slots.py)
        are released once the update is done; a fragment whose worker process is gone before
        its slot could be read is left out and counted (`learner/fragments_lost`)."""
        kept = [f for f in fragments if observations_available(f.obs)]
        try:
            metrics = self._update(kept) if kept else {}
        finally:
            for fragment in kept:
                release_observations(fragment.obs)
        if len(kept) < len(fragments):
            metrics[lm.FRAGMENTS_LOST] = float(len(fragments) - len(kept))
        return metrics

    def _update(self, fragments: list[Fragment]) -> dict[str, float]:
        start = time.perf_counter()
        batch = collate(fragments)
        reward = training_reward(
            rewards=batch.rewards,
            caption_ids=batch.caption_ids,
            caption_counts=batch.caption_counts,
            captions=batch.captions,
            extrinsic_coef=self.reward_config.extrinsic_coef,
            reward_scale=self.reward_config.reward_scale,
            reward_clip=self.reward_config.reward_clip,
            intrinsic_coef=self.reward_config.intrinsic_coef,
            count_exponent=self.reward_config.count_exponent,
            intrinsic_fn=self.reward_model.rewards,
        )
        finished = self.intrinsic_returns.add(fragments, reward.intrinsic)
        metrics: dict[str, float] = {}
        for _ in range(self.config.num_epochs):
            metrics = self._train_step(batch, reward.total)
        metrics.update(self.reward_model.train_iteration())
        if finished:
            metrics[lm.RETURN_INTRINSIC] = float(np.mean(finished))
        lag = self.version - batch.policy_versions
        self.version += 1
        self.samples_trained += batch.num_samples
        elapsed = time.perf_counter() - start
        metrics.update(
            {
                lm.POLICY_LAG: float(lag.mean()),
                lm.POLICY_LAG_MAX: float(lag.max()),
                lm.SAMPLES_PER_S: batch.num_samples / max(elapsed, 1e-9),
                lm.REWARD_EXTRINSIC_MEAN: float(reward.extrinsic.mean()),
                lm.REWARD_INTRINSIC_MEAN: float(reward.intrinsic.mean()),
            }
        )
        metrics.update(memory_metrics())
        return metrics

    def _train_step(self, batch: Batch, rewards: np.ndarray) -> dict[str, float]:
        cfg, dev = self.config, self.device
        as_tensor = lambda a: torch.as_tensor(a, device=dev)  # noqa: E731
        obs = {k: as_tensor(v) for k, v in batch.obs.items()}
        terminated, truncated = as_tensor(batch.terminated), as_tensor(batch.truncated)
        done = terminated | truncated
        steps = done.shape[0]
        starts = torch.cat([torch.zeros_like(done[:1]), done], dim=0)  # [T+1, B]
        logits, values, _ = self.policy(obs, as_tensor(batch.initial_state), starts)
        # A time-limited episode is not over in the MDP: bootstrap through the cut.
        rewards_t = (
            as_tensor(rewards) + cfg.gamma * as_tensor(batch.final_values) * truncated.float()
        )
        actions, behaviour_logp = as_tensor(batch.actions), as_tensor(batch.logp)
        logits = logits[:steps]
        logp = torch.log_softmax(logits, -1).gather(-1, actions.unsqueeze(-1)).squeeze(-1)
        returns = vtrace(
            log_ratios=(logp - behaviour_logp).detach(),
            discounts=cfg.gamma * (~done).float(),
            rewards=rewards_t,
            values=values[:steps].detach(),
            bootstrap_value=values[steps].detach(),
        )
        flat = lambda x: x.reshape(-1)  # noqa: E731
        terms = appo_loss(
            logits=logits.reshape(-1, logits.shape[-1]),
            actions=flat(actions),
            behaviour_logp=flat(behaviour_logp),
            values=flat(values[:steps]),
            old_values=flat(as_tensor(batch.values)),
            vtrace_targets=flat(returns.targets),
            advantages=flat(returns.advantages),
            clip_ratio=cfg.clip_ratio,
            value_clip=cfg.value_clip,
            value_coef=cfg.value_coef,
            entropy_coef=cfg.entropy_coef,
            normalize_advantages=cfg.normalize_advantages,
        )
        self.optimizer.zero_grad(set_to_none=True)
        terms.total.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.policy.parameters(), cfg.max_grad_norm)
        self.optimizer.step()
        return {
            lm.POLICY_LOSS: terms.policy.item(),
            lm.VALUE_LOSS: terms.value.item(),
            lm.ENTROPY: terms.entropy.item(),
            lm.CLIP_FRACTION: terms.clip_fraction.item(),
            lm.APPROX_KL: terms.approx_kl.item(),
            lm.GRAD_NORM: float(grad_norm),
        }

    def add_labels(self, labels: Sequence[CaptionLabel | PairLabel]) -> dict[str, float]:
        """Hand new LLM labels to the reward model (which may train on them now). May run in a
        thread beside `update` (the Ray learner's concurrency group for labels): the reward
        model guards its own state (reward_models/base.py)."""
        if not labels:
            return {}
        return self.reward_model.add_labels(labels)

    def intrinsic_rewards(self, captions: Sequence[str]) -> list[float]:
        """The current model's r_int of each caption (before count scaling), for display: reads
        without changing the model (its normalisation statistics included)."""
        return [float(r) for r in self.reward_model.read_rewards(list(captions))]

    def state_dict(self) -> dict:
        return {
            "policy": self.policy.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "version": self.version,
            "samples_trained": self.samples_trained,
            "reward_model": self.reward_model.state_dict(),
            "intrinsic_returns": self.intrinsic_returns.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.policy.load_state_dict(state["policy"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.version = int(state["version"])
        self.samples_trained = int(state["samples_trained"])
        self.reward_model.load_state_dict(state["reward_model"])
        self.intrinsic_returns.load_state_dict(state["intrinsic_returns"])
