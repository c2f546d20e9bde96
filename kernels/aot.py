"""Compile the kernels ahead of time for sm_80 / sm_90 without a GPU, and report shared memory.

    python -m kernels.aot                 # every kernel, fp16/fp32/bf16, head dims 64 and 128
    python -m kernels.aot --arch 90 --kernel flash_attention

The interpreter (TRITON_INTERPRET=1) runs any block size, however much shared memory it
would need; a real A100/H100 refuses a kernel above its limit at launch. Compiling the very
launch configurations the kernels use, with the CUDA backend's bundled ptxas, catches that
in CI. Must run in a process where TRITON_INTERPRET is unset (kernels must be JIT functions).
"""

from __future__ import annotations

import argparse
import importlib
import json
import re

import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

# Largest dynamic shared memory per block an opt-in kernel may use (CUDA programming guide).
SHARED_LIMIT = {80: 163 * 1024, 90: 227 * 1024}
KERNELS = ("flash_attention", "rms_norm", "rotary", "swiglu", "fused_linear_ce", "paged_attention")
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def compile_spec(spec, capability: int):
    if triton.knobs.runtime.interpret:
        raise RuntimeError("kernels.aot needs TRITON_INTERPRET unset: interpreted kernels cannot be compiled")
    names = list(spec.signature)
    attrs = {(names.index(a),): [["tt.divisibility", 16]] for a in spec.divisible}
    src = ASTSource(fn=spec.fn, signature=spec.signature, constexprs=spec.constexprs, attrs=attrs)
    return triton.compile(src, target=GPUTarget("cuda", capability, 32), options=spec.options)


def specs(kernel: str, dtype: torch.dtype, head_dim: int, capability: int):
    module = importlib.import_module(f"kernels.{kernel}")
    return module.compile_specs(dtype=dtype, head_dim=head_dim, capability=capability)


def report(kernel: str, dtype: str, head_dim: int, capability: int, only: str = "") -> list[dict]:
    """Compile every launch of ``kernel`` (whose name matches the regex ``only``); one row each."""
    rows = []
    for spec in specs(kernel, DTYPES[dtype], head_dim, capability):
        if only and not re.search(only, spec.name):
            continue
        compiled = compile_spec(spec, capability)
        rows.append({"kernel": kernel, "launch": spec.name, "dtype": dtype, "head_dim": head_dim,
                     "arch": capability, "shared": compiled.metadata.shared,
                     "limit": SHARED_LIMIT[capability], "num_warps": compiled.metadata.num_warps,
                     "constexprs": {k: v for k, v in spec.constexprs.items()}})
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", type=int, nargs="*", default=[80, 90])
    ap.add_argument("--kernel", nargs="*", default=list(KERNELS))
    ap.add_argument("--dtype", nargs="*", default=list(DTYPES))
    ap.add_argument("--head-dim", type=int, nargs="*", default=[64, 128])
    ap.add_argument("--only", default="", help="regex on launch names, e.g. 'fwd'")
    ap.add_argument("--json", action="store_true", help="one JSON list on stdout")
    args = ap.parse_args(argv)
    rows = [r for k in args.kernel for d in args.dtype for h in args.head_dim for a in args.arch
            for r in report(k, d, h, a, args.only)]
    if args.json:
        print(json.dumps(rows))
        return
    for r in rows:
        ok = "ok" if r["shared"] <= r["limit"] else "TOO BIG"
        print(f"sm_{r['arch']} {r['launch']:<20} {r['dtype']} D={r['head_dim']:<4} "
              f"shared={r['shared'] / 1024:6.1f} KiB / {r['limit'] // 1024} KiB  {ok}")


if __name__ == "__main__":
    main()
