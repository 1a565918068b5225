"""V-trace off-policy value targets and policy-gradient advantages (Espeholt et al., 2018).

Pure torch, time-major; no gradients flow through the returned tensors.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class VTraceReturns:
    """V-trace outputs, both [T, B] and detached from the autograd graph."""

    targets: torch.Tensor
    """v_s: the value targets."""
    advantages: torch.Tensor
    """clipped_ratio_s * (r_s + discount_s * v_{s+1} - V(x_s)), with v_T = bootstrap_value."""


def vtrace(
    *,
    log_ratios: torch.Tensor,
    discounts: torch.Tensor,
    rewards: torch.Tensor,
    values: torch.Tensor,
    bootstrap_value: torch.Tensor,
    rho_bar: float | None = 1.0,
    c_bar: float | None = 1.0,
) -> VTraceReturns:
    """Compute V-trace targets and advantages for a batch of trajectories.

    Args:
        log_ratios: [T, B] log pi(a_t | x_t) - log mu(a_t | x_t), target over behaviour policy.
        discounts: [T, B] gamma * (1 - done_t); zero where the episode ended after step t, so
            nothing from step t + 1 onwards leaks into step t.
        rewards: [T, B] r_t.
        values: [T, B] V(x_t) under the current value function.
        bootstrap_value: [B] V(x_T), the value of the state after the last step.
        rho_bar: rho-bar, the cap on the importance ratio used in the temporal differences and
            the advantages; None disables clipping.
        c_bar: c-bar, the cap on the trace-cutting coefficients; None disables clipping.

    Returns:
        VTraceReturns with targets and advantages, each [T, B], in the dtype of ``values``.
    """
    _check_shapes(
        log_ratios=log_ratios,
        discounts=discounts,
        rewards=rewards,
        values=values,
        bootstrap_value=bootstrap_value,
    )
    with torch.no_grad():
        ratios = torch.exp(log_ratios)
        clipped_ratios = ratios if rho_bar is None else torch.clamp(ratios, max=rho_bar)
        trace_coefs = ratios if c_bar is None else torch.clamp(ratios, max=c_bar)

        bootstrap_row = bootstrap_value.unsqueeze(0)
        next_values = torch.cat([values[1:], bootstrap_row], dim=0)
        deltas = clipped_ratios * (rewards + discounts * next_values - values)

        # v_s - V(x_s) = delta_s + discount_s * c_s * (v_{s+1} - V(x_{s+1})), and v_T = V(x_T).
        corrections = torch.empty_like(values)
        carry = torch.zeros_like(bootstrap_value)
        for step in reversed(range(values.shape[0])):
            carry = deltas[step] + discounts[step] * trace_coefs[step] * carry
            corrections[step] = carry
        targets = values + corrections

        next_targets = torch.cat([targets[1:], bootstrap_row], dim=0)
        advantages = clipped_ratios * (rewards + discounts * next_targets - values)
    return VTraceReturns(targets=targets, advantages=advantages)


def _check_shapes(*, bootstrap_value: torch.Tensor, **time_major: torch.Tensor) -> None:
    """Reject mismatched shapes, which would otherwise broadcast into wrong numbers."""
    shape = time_major["values"].shape
    if len(shape) != 2:
        raise ValueError(f"values must be [T, B], got shape {tuple(shape)}")
    for name, tensor in time_major.items():
        if tensor.shape != shape:
            raise ValueError(f"{name} has shape {tuple(tensor.shape)}, expected {tuple(shape)}")
    if bootstrap_value.shape != shape[1:]:
        raise ValueError(
            f"bootstrap_value has shape {tuple(bootstrap_value.shape)}, expected ({shape[1]},)"
        )
