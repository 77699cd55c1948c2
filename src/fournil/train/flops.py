"""Model FLOPs per trained token, and model FLOPs utilisation (MFU) where the peak is known.

Model FLOPs count what the model needs, not what a kernel happens to do (PaLM, appendix B;
nanoGPT's `estimate_mfu`): per token, forward + backward,

    6 N  +  6 d V  +  12 L d_attn T

N: non-embedding parameters (blocks and final norm); 6 d V: the LM head's matmul, counted
even when it is tied to the embedding (the lookup itself costs nothing, the head is a third
of a small model's compute); the last term: attention's scores and weighted sum over a
T-token context, with d_attn = heads x head_dim and causal masking not discounted.
Activation recomputation, MTP heads and a distillation teacher's forward are not counted:
they are work done, not model FLOPs.
"""

from __future__ import annotations

import torch

from fournil.model.config import TransformerConfig

# Dense bf16 tensor-core peaks (no sparsity), FLOP/s per GPU, from NVIDIA's data sheets. The
# first name found in `torch.cuda.get_device_name()` wins, so variants come before families.
BF16_PEAK_FLOPS = {
    "H100 PCIe": 756e12,
    "H100 NVL": 835e12,
    "H100": 989e12,  # SXM
    "H200": 989e12,
    "H800": 989e12,
    "B200": 2250e12,
    "A100": 312e12,
    "A800": 312e12,
    "L40S": 362e12,
    "L40": 181e12,
    "L4": 121e12,
}


def flops_per_token(config: TransformerConfig, seq_len: int) -> dict[str, float]:
    """Training FLOPs per token by part, and their `total`; see the module docstring."""
    d, head_dim = config.hidden_size, config.head_dim
    d_attn, d_kv = config.num_heads * head_dim, config.num_kv_heads * head_dim
    attention = 2 * d * d_attn + 2 * d * d_kv + 2 * head_dim  # q, o; k, v; q/k norms
    mlp = 3 * d * config.intermediate_size
    non_embedding = config.num_layers * (attention + mlp + 2 * d) + d  # + norms, final norm
    parts = {
        "6N (blocks)": 6.0 * non_embedding,
        "6dV (LM head)": 6.0 * d * config.vocab_size,
        "12 L d_attn T (attention)": 12.0 * config.num_layers * d_attn * seq_len,
    }
    return {**parts, "total": sum(parts.values())}


def bf16_peak_flops(device_name: str) -> float | None:
    """The dense bf16 peak of the GPU named `device_name` (`torch.cuda.get_device_name()`), or
    None for a GPU missing from the table."""
    return next((peak for key, peak in BF16_PEAK_FLOPS.items() if key in device_name), None)


def peak_flops(device: torch.device, bf16: bool) -> float | None:
    """The peak FLOP/s that MFU divides by, or None where it has no agreed value: CPUs, fp32
    training, GPUs missing from the table."""
    if device.type != "cuda" or not bf16:
        return None
    return bf16_peak_flops(torch.cuda.get_device_name(device))
