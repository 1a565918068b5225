"""Drawing actions from logits, in numpy, with the noise drawn a fragment at a time.

A rollout worker draws one action per environment per step. For small batches the fixed cost of
each torch call (`multinomial` alone: about 30 µs on one core) outweighs the NetHack step it
decides, and every extra library call per step evicts NetHack's code from the core's cache. So a
step costs one addition and one argmax (the Gumbel-max trick: argmax(logits + Gumbel noise) is
distributed as softmax(logits)), and the log-probabilities of the chosen actions are computed
for the whole fragment at once.
"""

from __future__ import annotations

import numpy as np


def gumbel_noise(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Standard Gumbel samples, float32."""
    return rng.gumbel(size=shape).astype(np.float32)


def draw_actions(logits: np.ndarray, noise: np.ndarray) -> np.ndarray:
    """Actions [B] drawn from softmax(logits) for logits [B, A], given Gumbel noise [B, A].

    An action with logit -inf (probability 0) is never drawn.
    """
    return np.argmax(logits + noise, axis=-1)


def log_probs(logits: np.ndarray, actions: np.ndarray) -> np.ndarray:
    """log softmax(logits)[..., actions] for logits [..., A] and integer actions [...], float32."""
    shifted = logits - logits.max(axis=-1, keepdims=True)
    log_total = np.log(np.exp(shifted).sum(axis=-1))
    chosen = np.take_along_axis(shifted, actions[..., None], axis=-1)[..., 0]
    return (chosen - log_total).astype(np.float32)
