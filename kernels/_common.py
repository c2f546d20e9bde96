"""Small helpers shared by the Triton kernels."""

from __future__ import annotations

import torch
import triton

# Under TRITON_INTERPRET=1 kernels run on CPU tensors through numpy: there is no driver, so no
# autotuning, no device properties, and each program instance costs Python time, so the
# interpreter gets one config with large blocks (fewer programs) instead of GPU-tuned ones.
INTERPRET = bool(triton.knobs.runtime.interpret)

# Triton signature type of each torch dtype, for the ahead-of-time compile specs.
TRITON_DTYPE = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}



def next_pow2(n: int) -> int:
    return triton.next_power_of_2(int(n))


def row_programs(n_rows: int, device: torch.device) -> int:
    """Programs for kernels that stride over rows and reduce a per-program partial (RMSNorm dw)."""
    if device.type == "cuda":
        return min(n_rows, torch.cuda.get_device_properties(device).multi_processor_count * 2)
    return min(n_rows, 4)


def as_rows(x: torch.Tensor) -> torch.Tensor:
    """(..., D) -> (rows, D) with a unit stride on the last dim (copies only when needed)."""
    x2 = x.reshape(-1, x.shape[-1])
    return x2 if x2.stride(-1) == 1 else x2.contiguous()


class CompileSpec:
    """One kernel launch as the GPU would compile it: function, signature, constexprs, options.

    ``kernels.aot`` compiles these for sm_80 / sm_90 without a GPU, so tests can check shared
    memory against what the chips really have (the interpreter would accept anything).
    Signature keys must follow the kernel's argument order.
    """

    def __init__(self, name, fn, signature, constexprs, num_warps, num_stages, divisible=()):
        self.name, self.fn = name, fn
        self.signature = dict(signature)
        self.constexprs = dict(constexprs)
        for k in self.constexprs:
            self.signature[k] = "constexpr"
        self.options = {"num_warps": num_warps, "num_stages": num_stages}
        # What a real launch specialises on, and what decides vectorised and pipelined (async
        # copy) loads, hence shared memory: pointers 16-byte aligned, and the integers that are
        # multiples of 16 at real sizes (strides, head and hidden sizes).
        self.divisible = tuple(k for k, v in self.signature.items() if v.startswith("*")) + tuple(divisible)

    def __repr__(self):
        return f"CompileSpec({self.name}, {self.constexprs}, {self.options})"
