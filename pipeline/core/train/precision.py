"""Mixed precision as the training surveys describe it (Micikevicius et al. 2018; bf16 since).

The parameters (and so the optimizer's master copy) always stay fp32. Under autocast the
matmuls run in the low-precision type; fp16 additionally needs dynamic loss scaling, because
its 5 exponent bits flush small gradients to zero: the loss is multiplied by a scale before
backward, gradients are unscaled before clipping, and a step with inf/nan gradients is
skipped while the scale halves (it doubles again after 2000 clean steps). bf16 keeps fp32's
exponent range, so it needs no scaler.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch


@dataclass
class Precision:
    name: str  # fp32 | bf16 | fp16
    device_type: str

    @property
    def dtype(self) -> torch.dtype | None:
        return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.name)

    def autocast(self):
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=self.dtype)

    def scaler(self) -> torch.amp.GradScaler:
        """A dynamic loss scaler for fp16; a disabled (pass-through) one otherwise."""
        return torch.amp.GradScaler(self.device_type, enabled=self.name == "fp16")


def resolve(name: str, device: torch.device) -> Precision:
    """``auto``: bf16 where the GPU supports it, fp16 on older GPUs, fp32 on CPU (most CPUs
    lack bf16 matmul units, where autocast only adds casts — benchmarks/train.py measures it)."""
    if name == "auto":
        if device.type == "cuda":
            name = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        else:
            name = "fp32"
    return Precision(name, device.type)
