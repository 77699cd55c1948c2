"""Device and precision: bf16 autocast where the hardware does it fast, fp32 elsewhere."""

from __future__ import annotations

from contextlib import nullcontext

import torch


def pick_device(name: str = "auto") -> torch.device:
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def autocast_for(device: torch.device, dtype: str = "auto"):
    """An autocast context, or a null one when training in fp32.

    `auto` means bf16 on GPUs that support it; on CPUs without bf16 matrix units bf16 is
    slower than fp32, so `auto` stays in fp32 there (ask for `bfloat16` to force it).
    """
    use_bf16 = dtype == "bfloat16" or (
        dtype == "auto" and device.type == "cuda" and torch.cuda.is_bf16_supported())
    if use_bf16:
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return nullcontext()
