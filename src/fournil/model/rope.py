"""Rotary position embeddings: the inverse frequencies of each RoPE variant a base model may
declare, computed as transformers computes them (`modeling_rope_utils.py`, transformers 5), so
an imported model gives the same logits, without importing transformers.

`default` is the original RoPE; `linear` divides every frequency by `factor` (position
interpolation); `llama3` (Llama 3.1+) divides only the low frequencies, with a smooth ramp
between; `yarn` blends interpolated and original frequencies per dimension and scales cos and
sin by an attention factor. config.py's `ROPE_SCALINGS` says which keys each takes; `dynamic`
and `longrope` change with the sequence length at run time and are refused there.
"""

from __future__ import annotations

import math

import torch


def default_inv_freq(head_dim: int, theta: float, device: torch.device | str | None = None
                     ) -> torch.Tensor:
    """1 / theta^(2i / d) in float32, the exponent computed from int64 like HF's, so the
    frequencies are bit for bit the same."""
    exponent = torch.arange(0, head_dim, 2, dtype=torch.int64, device=device).float() / head_dim
    return 1.0 / (theta ** exponent)


def inv_freq_and_scale(head_dim: int, theta: float, scaling: dict | None = None,
                       device: torch.device | str | None = None) -> tuple[torch.Tensor, float]:
    """(inverse frequencies [head_dim / 2] in float32, the factor cos and sin are scaled by),
    on `device` (computed there, as HF does)."""
    inv_freq = default_inv_freq(head_dim, theta, device)
    if not scaling:
        return inv_freq, 1.0
    kind, factor = scaling["rope_type"], scaling["factor"]
    if kind == "linear":
        return inv_freq / factor, 1.0
    if kind == "llama3":
        return _llama3(inv_freq, scaling), 1.0
    if kind == "yarn":
        return _yarn(head_dim, theta, scaling, device)
    raise ValueError(f"unsupported rope_type {kind!r}")


def _llama3(inv_freq: torch.Tensor, scaling: dict) -> torch.Tensor:
    """Wavelengths longer than the original context / low_freq_factor are divided by `factor`,
    those shorter than it / high_freq_factor kept, the ones between blended smoothly."""
    factor, old_len = scaling["factor"], scaling["original_max_position_embeddings"]
    low, high = scaling["low_freq_factor"], scaling["high_freq_factor"]
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > old_len / low, inv_freq / factor, inv_freq)
    smooth = (old_len / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = ~(wavelen < old_len / high) * ~(wavelen > old_len / low)
    return torch.where(medium, smoothed, scaled)


def _yarn(head_dim: int, theta: float, scaling: dict, device: torch.device | str | None
          ) -> tuple[torch.Tensor, float]:
    """YaRN (Peng et al., 2023): interpolated frequencies below the correction range,
    original ones above, a linear ramp across; cos/sin scaled by 0.1 ln(factor) + 1 unless the
    config gives the attention factor (or DeepSeek's mscale ratio)."""
    factor, old_len = scaling["factor"], scaling["original_max_position_embeddings"]
    attention_factor = scaling.get("attention_factor")
    if attention_factor is None:
        mscale, mscale_all_dim = scaling.get("mscale"), scaling.get("mscale_all_dim")
        if mscale and mscale_all_dim:
            attention_factor = _mscale(factor, mscale) / _mscale(factor, mscale_all_dim)
        else:
            attention_factor = _mscale(factor)
    beta_fast, beta_slow = scaling.get("beta_fast") or 32, scaling.get("beta_slow") or 1

    def correction_dim(rotations: float) -> float:
        return (head_dim * math.log(old_len / (rotations * 2 * math.pi))) / (2 * math.log(theta))

    low, high = correction_dim(beta_fast), correction_dim(beta_slow)
    if scaling.get("truncate", True):
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, head_dim - 1)
    if low == high:
        high += 0.001  # HF's guard against a zero-width ramp
    ramp = ((torch.arange(head_dim // 2, dtype=torch.float32) - low) / (high - low)).clamp(0, 1)
    extrapolation = 1 - ramp.to(device)
    pos_freqs = theta ** (torch.arange(0, head_dim, 2, device=device).float() / head_dim)
    inv_freq = ((1.0 / (factor * pos_freqs)) * (1 - extrapolation)
                + (1.0 / pos_freqs) * extrapolation)
    return inv_freq, float(attention_factor)


def _mscale(scale: float, mscale: float = 1.0) -> float:
    return 1.0 if scale <= 1 else 0.1 * mscale * math.log(scale) + 1.0


def rope_tables(head_dim: int, max_len: int, theta: float, scaling: dict | None = None,
                device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of shape [max_len, head_dim], in float32, as HF's rotary embedding computes
    them: frequencies duplicated (rotate-half layout, not interleaved), then scaled."""
    inv_freq, scale = inv_freq_and_scale(head_dim, theta, scaling, device)
    positions = torch.arange(max_len, device=device).float()
    freqs = positions[:, None] * inv_freq[None, :]
    emb = torch.cat((freqs, freqs), dim=-1)
    if scale == 1.0:  # fournil's own models: exactly the tables they always had
        return emb.cos(), emb.sin()
    return emb.cos() * scale, emb.sin() * scale
