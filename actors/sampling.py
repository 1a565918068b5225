"""A rollout worker's randomness and log-probabilities, in numpy, a fragment at a time.

A worker draws one action per environment per step. For small batches the fixed cost of each
torch call (`multinomial` alone: about 30 µs on one core) outweighs the NetHack step it decides,
and every extra library call per step evicts NetHack's code from the core's cache. So the
worker draws a sample's Gumbel noise at once here, the policy's `act` turns a step's noise into
actions (argmax(logits + noise), learner/models.py's `gumbel_max`: one addition and one argmax,
or for the uniform policy the argmax alone), and the log-probabilities of the chosen actions are
computed for the whole fragment at once.
"""

from __future__ import annotations

import numpy as np


def gumbel_noise(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Standard Gumbel samples [*shape], float32: -log(E) of standard exponentials E, which is
    Gumbel(0, 1) distributed (if E ~ Exp(1), P(-log E <= x) = P(E >= e^-x) = exp(-e^-x)).

    numpy draws the exponentials by its ziggurat in float64; one logarithm, in place, follows.
    For a 16-env sample of 4 x 32 steps and 23 actions that takes 0.24 ms against 0.52 for the
    same uniforms through -log(-log(1 - u)) and 0.71 for `rng.gumbel` (one core, timeit). An E
    of exactly 0 (one in about 2**53 values) becomes the smallest double, a finite noise.
    """
    exponential = rng.standard_exponential(size=shape)
    if not exponential.all():
        exponential[exponential == 0] = np.finfo(np.float64).smallest_subnormal
    np.log(exponential, out=exponential)
    return np.negative(exponential, out=exponential).astype(np.float32)


def log_probs(logits: np.ndarray, actions: np.ndarray) -> np.ndarray:
    """log softmax(logits)[..., actions] for logits [..., A] and integer actions [...], float32."""
    shifted = logits - logits.max(axis=-1, keepdims=True)
    log_total = np.log(np.exp(shifted).sum(axis=-1))
    chosen = np.take_along_axis(shifted, actions[..., None], axis=-1)[..., 0]
    return (chosen - log_total).astype(np.float32)
