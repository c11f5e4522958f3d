"""Rotary position embeddings (Su et al., 2021) in the rotate-half layout of HF Llama checkpoints,
with the `rope_scaling` of HF configs that stretch a model's context: "linear" (position
interpolation, Chen et al., 2023) and "llama3" (Llama 3.1's frequency-dependent scaling)."""

from __future__ import annotations

import math

import torch

from wattserve.runtime.layers.rope_scaling import RopeScaling


def inverse_frequencies(head_dim: int, theta: float, scaling: RopeScaling | None = None) -> torch.Tensor:
    """theta^(-2i/d) for i < d/2, scaled as HF transformers' `modeling_rope_utils` does
    (`_compute_linear_scaling_rope_parameters`, `_compute_llama3_parameters`, the latter after
    Meta's `apply_scaling` in llama-models): wavelengths longer than original_max / low_freq_factor
    are divided by `factor`, shorter than original_max / high_freq_factor kept, and those between
    interpolated smoothly. Neither type changes the attention scale."""
    inv = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))
    if scaling is None:
        return inv
    if scaling.rope_type == "linear":
        return inv / scaling.factor
    old = scaling.original_max_position_embeddings
    low_wavelen = old / scaling.low_freq_factor
    high_wavelen = old / scaling.high_freq_factor
    wavelen = 2 * math.pi / inv
    scaled = torch.where(wavelen > low_wavelen, inv / scaling.factor, inv)
    smooth = (old / wavelen - scaling.low_freq_factor) / (scaling.high_freq_factor - scaling.low_freq_factor)
    smoothed = (1 - smooth) * scaled / scaling.factor + smooth * scaled
    medium = ~(wavelen < high_wavelen) & ~(wavelen > low_wavelen)
    return torch.where(medium, smoothed, scaled)


class Rotary:
    def __init__(self, head_dim: int, theta: float, max_positions: int, device: torch.device,
                 scaling: RopeScaling | None = None) -> None:
        inv = inverse_frequencies(head_dim, theta, scaling).to(device)
        t = torch.arange(max_positions, dtype=torch.float32, device=device)
        freqs = torch.outer(t, inv)
        self.cos = torch.cat([freqs.cos(), freqs.cos()], dim=-1)
        self.sin = torch.cat([freqs.sin(), freqs.sin()], dim=-1)

    def table(self, positions: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and sin rows of `positions`, as [tokens, 1, head_dim] in `dtype` (once per forward)."""
        return self.cos[positions].unsqueeze(1).to(dtype), self.sin[positions].unsqueeze(1).to(dtype)

    def apply(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """x: [tokens, heads, head_dim]; positions: [tokens]."""
        cos = self.cos[positions].unsqueeze(1).to(x.dtype)
        sin = self.sin[positions].unsqueeze(1).to(x.dtype)
        half = x.shape[-1] // 2
        rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
        return x * cos + rotated * sin
