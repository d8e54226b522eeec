"""Rectified flow (Liu et al. 2022; Esser et al. 2024): x_t = (1 - t) x0 + t eps, t in [0, 1].

The network predicts the flow eps - x0 (as the official Self-Forcing code does) or x0
itself; `to_x0` turns either into x0. Few-step sampling walks a short list of noise levels,
re-noising each x0 prediction to the next level with fresh noise: Psi of Algorithm 2
(Huang et al. 2025), x_next = (1 - t_next) x0 + t_next eps.
"""

from __future__ import annotations

import torch


def on_device(t, like: torch.Tensor, dtype=None) -> torch.Tensor:
    """t (a number or a tensor) as a tensor on `like`'s device: a number is filled in there, where
    torch.as_tensor would copy it over from the host (on a GPU, a wait for everything queued)."""
    dtype = dtype or like.dtype
    if isinstance(t, torch.Tensor):
        return t.to(device=like.device, dtype=dtype)
    return torch.full((), float(t), dtype=dtype, device=like.device)


def _bcast(t: torch.Tensor | float, x: torch.Tensor) -> torch.Tensor:
    """t scalar, (B,) or (B, F) -> broadcastable to x (B, F, C, h, w)."""
    t = on_device(t, x)
    return t.reshape(t.shape + (1,) * (x.dim() - t.dim()))


def add_noise(x0: torch.Tensor, noise: torch.Tensor, t) -> torch.Tensor:
    """x_t = (1 - t) x0 + t noise. Also Psi, the re-noising step, with fresh noise."""
    t = _bcast(t, x0)
    return (1 - t) * x0 + t * noise


def flow_target(x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """d x_t / d t = noise - x0."""
    return noise - x0


def to_x0(pred: torch.Tensor, x_t: torch.Tensor, t, prediction: str = "flow") -> torch.Tensor:
    if prediction == "x0":
        return pred
    return x_t - _bcast(t, x_t) * pred


def shift_timestep(t, shift: float):
    """Spend more steps at high noise: t' = s t / (1 + (s - 1) t) (SD3, Wan)."""
    return shift * t / (1 + (shift - 1) * t)


def few_step_schedule(steps: int, shift: float = 1.0) -> torch.Tensor:
    """Noise levels of a `steps`-step sampler, from 1 (pure noise) down, excluding 0.

    steps=4, shift=5 gives [1.0, 0.9375, 0.8333, 0.625] (the official code's 1000/750/500/250
    warped by the shift)."""
    if not 1 <= steps <= 8:
        raise ValueError(f"steps must be between 1 and 8, got {steps}")
    base = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)[:-1]
    return shift_timestep(base, shift).float()


def sample_logit_normal(
    shape, mean: float = 0.0, std: float = 1.0, generator=None, device=None
) -> torch.Tensor:
    """Training noise levels concentrated mid-range (SD3's logit-normal)."""
    return torch.sigmoid(mean + std * torch.randn(shape, generator=generator, device=device))
