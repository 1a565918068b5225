"""A rollout worker's randomness and log-probabilities, in numpy, a fragment at a time.

A worker draws one action per environment per step. For small batches the fixed cost of each
torch call (`multinomial` alone: about 30 µs on one core) outweighs the NetHack step it decides,
and every extra library call per step evicts NetHack's code from the core's cache. So the
worker draws an unroll's Gumbel noise at once here, the policy's `act` turns a step's noise into
actions (argmax(logits + noise), learner/models.py's `gumbel_max`: one addition and one argmax,
or for the uniform policy the argmax alone), and the log-probabilities of the chosen actions are
computed for the whole fragment at once.
"""

from __future__ import annotations

import numpy as np


def gumbel_noise(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Standard Gumbel samples, float32: `rng.gumbel(size=shape)` cast to float32, 4x faster.

    numpy's gumbel takes -log(-log(1 - u)) of the next uniform u one value at a time (for a
    fragment's noise, about a microsecond per env step); here the same uniforms come in one
    call and the logarithms run vectorised. Those may differ from the C library's in the last
    bit of a float64, which the float32 cast hides (no difference in 20 million values).
    numpy redraws a u of 0 (p = 2**-53 per value); on such a draw this rewinds `rng` and lets
    numpy draw, so the stream stays numpy's.
    """
    state = rng.bit_generator.state
    uniform = rng.random(size=shape)
    if not uniform.all():
        rng.bit_generator.state = state
        return rng.gumbel(size=shape).astype(np.float32)
    return (-np.log(-np.log(1.0 - uniform))).astype(np.float32)


def log_probs(logits: np.ndarray, actions: np.ndarray) -> np.ndarray:
    """log softmax(logits)[..., actions] for logits [..., A] and integer actions [...], float32."""
    shifted = logits - logits.max(axis=-1, keepdims=True)
    log_total = np.log(np.exp(shifted).sum(axis=-1))
    chosen = np.take_along_axis(shifted, actions[..., None], axis=-1)[..., 0]
    return (chosen - log_total).astype(np.float32)
