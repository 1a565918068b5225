"""APPO loss (Sample Factory v1 / ONI): PPO-clip policy loss on V-trace advantages, clipped
value loss and an entropy bonus. Pure torch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class LossTerms:
    """Scalar loss terms; ``total = policy + value - entropy_coef * entropy``."""

    total: torch.Tensor
    """What to backpropagate."""
    policy: torch.Tensor
    """PPO-clip surrogate loss (with grad)."""
    value: torch.Tensor
    """Value loss, already multiplied by value_coef (with grad)."""
    entropy: torch.Tensor
    """Mean policy entropy, positive (with grad); the loss uses -entropy_coef times this."""
    clip_fraction: torch.Tensor
    """Fraction of samples whose ratio lies outside the clip interval (detached)."""
    approx_kl: torch.Tensor
    """mean(behaviour_logp - logp), an estimate of KL(mu || pi) (detached)."""


def appo_loss(
    *,
    logits: torch.Tensor,
    actions: torch.Tensor,
    behaviour_logp: torch.Tensor,
    values: torch.Tensor,
    old_values: torch.Tensor,
    vtrace_targets: torch.Tensor,
    advantages: torch.Tensor,
    clip_ratio: float = 0.1,
    value_clip: float | None = 1.0,
    value_coef: float = 0.5,
    entropy_coef: float = 0.003,
    normalize_advantages: bool = True,
    mask: torch.Tensor | None = None,
) -> LossTerms:
    """APPO loss over N samples (time x batch flattened).

    Args:
        logits: [N, A] current policy logits.
        actions: [N] integer actions taken by the behaviour policy.
        behaviour_logp: [N] log mu(a | x) recorded when acting.
        values: [N] current value predictions V(x).
        old_values: [N] value predictions when acting, the centre of the value clip.
        vtrace_targets: [N] V-trace targets v_s.
        advantages: [N] V-trace policy-gradient advantages.
        clip_ratio: epsilon; the ratio pi/mu is clipped to the asymmetric interval
            [1 / (1 + epsilon), 1 + epsilon].
        value_clip: bound on |V - old_values| in the clipped value loss; None disables clipping.
        value_coef: weight of the value loss.
        entropy_coef: weight of the entropy bonus.
        normalize_advantages: standardise advantages over the valid samples, (adv - mean) /
            (std + 1e-8), with the population std (no Bessel correction).
        mask: optional [N] bool; only samples where it is True enter any term or statistic.

    Returns:
        LossTerms of scalars. Inputs other than logits and values are treated as constants.
    """
    _check_shapes(
        logits=logits,
        actions=actions,
        behaviour_logp=behaviour_logp,
        values=values,
        old_values=old_values,
        vtrace_targets=vtrace_targets,
        advantages=advantages,
        mask=mask,
    )
    if mask is not None:
        # Boolean indexing rather than multiplying by the mask: padding may hold inf or NaN,
        # and 0 * NaN would reach both the loss and the gradients.
        logits, actions, behaviour_logp, values, old_values, vtrace_targets, advantages = (
            t[mask]
            for t in (
                logits,
                actions,
                behaviour_logp,
                values,
                old_values,
                vtrace_targets,
                advantages,
            )
        )
        if logits.shape[0] == 0:
            raise ValueError("mask selects no samples")

    log_probs = torch.log_softmax(logits, dim=-1)
    logp = log_probs.gather(1, actions.long().unsqueeze(1)).squeeze(1)
    # Clamping keeps 0 * log(0) at 0 for actions with -inf logits.
    min_log = torch.finfo(log_probs.dtype).min
    entropy = -(log_probs.exp() * log_probs.clamp(min=min_log)).sum(dim=-1).mean()

    behaviour_logp = behaviour_logp.detach()
    policy, clip_fraction = _policy_term(
        logp, behaviour_logp, advantages.detach(), clip_ratio, normalize_advantages
    )
    value = (
        value_coef
        * _value_errors(
            values=values, old_values=old_values, targets=vtrace_targets, value_clip=value_clip
        ).mean()
    )

    total = policy + value - entropy_coef * entropy
    with torch.no_grad():
        approx_kl = (behaviour_logp - logp).mean()
    return LossTerms(
        total=total,
        policy=policy,
        value=value,
        entropy=entropy,
        clip_fraction=clip_fraction,
        approx_kl=approx_kl,
    )


def _policy_term(
    logp: torch.Tensor,
    behaviour_logp: torch.Tensor,
    advantages: torch.Tensor,
    clip_ratio: float,
    normalize_advantages: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The clipped surrogate loss (scalar) and the fraction of ratios outside the clip; all [N]."""
    if normalize_advantages:
        advantages = (advantages - advantages.mean()) / (advantages.std(correction=0) + 1e-8)
    ratio = torch.exp(logp - behaviour_logp)
    low, high = 1.0 / (1.0 + clip_ratio), 1.0 + clip_ratio
    clipped_ratio = torch.clamp(ratio, low, high)
    policy = -torch.min(ratio * advantages, clipped_ratio * advantages).mean()
    with torch.no_grad():
        clip_fraction = ((ratio < low) | (ratio > high)).to(logp.dtype).mean()
    return policy, clip_fraction


def _value_errors(
    *,
    values: torch.Tensor,
    old_values: torch.Tensor,
    targets: torch.Tensor,
    value_clip: float | None,
) -> torch.Tensor:
    """[N] squared errors, the larger of the raw and the clipped one when value_clip is set."""
    targets = targets.detach()
    squared_errors = (values - targets) ** 2
    if value_clip is None:
        return squared_errors
    old_values = old_values.detach()
    clipped_values = old_values + torch.clamp(values - old_values, -value_clip, value_clip)
    return torch.max(squared_errors, (clipped_values - targets) ** 2)


def _check_shapes(*, logits: torch.Tensor, mask: torch.Tensor | None, **per_sample) -> None:
    """Reject [N, 1] and other shapes that would broadcast silently into an [N, N] loss."""
    if logits.dim() != 2:
        raise ValueError(f"logits must be [N, A], got shape {tuple(logits.shape)}")
    count = logits.shape[0]
    if mask is not None:
        if mask.dtype != torch.bool:
            raise ValueError(f"mask must be a bool tensor, got {mask.dtype}")
        per_sample["mask"] = mask
    for name, tensor in per_sample.items():
        if tensor.shape != (count,):
            raise ValueError(f"{name} has shape {tuple(tensor.shape)}, expected ({count},)")
