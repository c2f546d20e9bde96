"""Speed and memory of lmdag's kernels next to PyTorch and peers, printed as ratios.

    python benchmarks/kernels.py           # GPU figures when CUDA is there; CPU memory figures always
    python benchmarks/kernels.py --quick   # smaller shapes

On a GPU (targets from issue 5):
  * attention forward+backward TFLOP/s vs torch SDPA (and flash-attn when installed),
    causal, GQA, bf16, head dim 128 - target: at least SDPA's speed at T >= 2k;
  * peak memory of the fused linear cross-entropy vs lm_head + F.cross_entropy (and Liger's
    fused loss when installed) at vocab 32k-128k - target: at least 3x less.
On a CPU the Triton kernels only run in the interpreter, so their speed means nothing there;
what can be measured honestly is the memory of the chunked loss algorithm itself (the
reference path the model uses on CPU) against the naive one. Each variant runs in a fresh
process: peak resident memory (VmHWM, reset just before the call) minus the resident memory
before it, with glibc told to return every large free to the OS so RSS tracks live tensors.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kernels import reference  # noqa: E402

# ----------------------------------------------------------------------------- GPU


def _bench_ms(fn, grads=()):
    from triton.testing import do_bench

    return do_bench(fn, grad_to_none=list(grads), warmup=25, rep=100)


def gpu_attention(quick: bool):
    from kernels.flash_attention import attention

    try:
        from flash_attn import flash_attn_func
    except ImportError:
        flash_attn_func = None
    dtype, D, Hq, Hkv = torch.bfloat16, 128, 16, 4
    tokens = 8192 if quick else 16384
    print(f"\nattention fwd+bwd, causal, bf16, Hq={Hq} Hkv={Hkv} D={D}, {tokens} tokens per batch (TFLOP/s)")
    print(f"{'T':>6} {'lmdag':>8} {'sdpa':>8} {'flash-attn':>11} {'lmdag/sdpa':>11}")
    for T in ([1024, 2048, 4096] if quick else [512, 1024, 2048, 4096, 8192, 16384]):
        B = max(1, tokens // T)
        q = torch.randn(B, Hq, T, D, device="cuda", dtype=dtype, requires_grad=True)
        k = torch.randn(B, Hkv, T, D, device="cuda", dtype=dtype, requires_grad=True)
        v = torch.randn(B, Hkv, T, D, device="cuda", dtype=dtype, requires_grad=True)
        do = torch.randn(B, Hq, T, D, device="cuda", dtype=dtype)
        # causal: half the (T, T) scores; backward does 2.5x the forward's matmul work
        flops = 4 * B * Hq * T * T * D * 0.5 * 3.5
        tflops = lambda ms: flops / ms / 1e9

        def sdpa():
            return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)

        results = {"lmdag": lambda: attention(q, k, v, causal=True), "sdpa": sdpa}
        if flash_attn_func is not None:
            qt, kt, vt = (x.detach().transpose(1, 2).contiguous().requires_grad_() for x in (q, k, v))
            dot = do.transpose(1, 2).contiguous()
            results["flash-attn"] = (lambda: flash_attn_func(qt, kt, vt, causal=True), dot, (qt, kt, vt))
        row = {}
        for name, spec in results.items():
            fn, grad, leaves = spec if isinstance(spec, tuple) else (spec, do, (q, k, v))
            row[name] = tflops(_bench_ms(lambda: fn().backward(grad), leaves))
        fa = f"{row['flash-attn']:11.1f}" if "flash-attn" in row else f"{'n/a':>11}"
        print(f"{T:6d} {row['lmdag']:8.1f} {row['sdpa']:8.1f} {fa} {row['lmdag'] / row['sdpa']:10.2f}x")
        del q, k, v, do
        torch.cuda.empty_cache()


def _gpu_peak(fn, leaves):
    for t in leaves:  # every variant starts without .grad, so each pays for its gradients
        t.grad = None
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - base


def gpu_linear_ce_memory(quick: bool):
    from kernels.fused_linear_ce import linear_cross_entropy

    try:
        from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss
    except ImportError:
        LigerFusedLinearCrossEntropyLoss = None
    N, H, dtype = (4096 if quick else 8192), 4096, torch.bfloat16
    print(f"\nlm head + cross-entropy fwd+bwd, {N} tokens, hidden {H}, bf16: peak extra memory (GiB), time (ms)")
    print(f"{'vocab':>7} {'naive':>13} {'lmdag':>13} {'liger':>13} {'naive/lmdag':>12}")
    for V in (32000, 65536, 128256):
        hidden = torch.randn(N, H, device="cuda", dtype=dtype, requires_grad=True)
        weight = (torch.randn(V, H, device="cuda", dtype=dtype) * 0.02).requires_grad_()
        targets = torch.randint(0, V, (N,), device="cuda")

        def naive():
            F.cross_entropy((hidden @ weight.t()).float(), targets).backward()

        variants = {"naive": naive, "lmdag": lambda: linear_cross_entropy(hidden, weight, targets).backward()}
        if LigerFusedLinearCrossEntropyLoss is not None:
            liger = LigerFusedLinearCrossEntropyLoss()
            variants["liger"] = lambda: liger(weight, hidden, targets).backward()
        cells = {}
        for name, fn in variants.items():
            peak = _gpu_peak(fn, (hidden, weight)) / 2**30
            ms = _bench_ms(fn, (hidden, weight))
            cells[name] = (peak, ms)
        fmt = lambda c: f"{c[0]:6.2f} {c[1]:6.1f}" if c else f"{'n/a':>13}"
        print(f"{V:7d} {fmt(cells['naive'])} {fmt(cells['lmdag'])} {fmt(cells.get('liger'))} "
              f"{cells['naive'][0] / cells['lmdag'][0]:11.1f}x")
        del hidden, weight, targets
        torch.cuda.empty_cache()


def gpu_small_kernels(quick: bool):
    import kernels

    print("\nfwd+bwd time (ms), Triton vs the PyTorch reference (eager)")
    T = 4096 if quick else 16384
    x = torch.randn(T, 4096, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    w = torch.ones(4096, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    g = torch.randn(T, 11008, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    u = torch.randn(T, 11008, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    cases = {"rms_norm": ((x, w), lambda m: m.rms_norm(x, w)), "swiglu": ((g, u), lambda m: m.swiglu(g, u))}
    for name, (leaves, call) in cases.items():
        times = {}
        for backend in ("triton", "torch"):
            kernels.set_backend(backend)
            out = call(kernels)
            grad = torch.randn_like(out)
            times[backend] = _bench_ms(lambda: call(kernels).backward(grad), leaves)
        print(f"  {name:<9} triton {times['triton']:7.3f}  torch {times['torch']:7.3f}  "
              f"speed-up {times['torch'] / times['triton']:5.2f}x")
    kernels.set_backend("auto")


# ----------------------------------------------------------------------------- CPU


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak_rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def _child_memory(variant: str, N: int, H: int, V: int, chunk: int):
    """Runs in a fresh process: one loss fwd+bwd, prints its peak extra RSS as JSON."""
    torch.manual_seed(0)
    hidden = torch.randn(N, H, requires_grad=True)
    weight = (torch.randn(V, H) * 0.02).requires_grad_()
    targets = torch.randint(0, V, (N,))
    if variant == "naive":
        loss_fn = lambda h, w, t: reference.naive_linear_cross_entropy(h, w, t)
    else:
        loss_fn = lambda h, w, t: reference.linear_cross_entropy(h, w, t, chunk_size=chunk)
    loss_fn(hidden[:8], weight, targets[:8]).backward()  # warm up kernels and allocator paths
    hidden.grad = weight.grad = None
    base = _rss_bytes()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current RSS
    loss = loss_fn(hidden, weight, targets)
    loss.backward()
    print(json.dumps({"peak": _peak_rss_bytes() - base, "loss": loss.item()}))


def cpu_linear_ce_memory(quick: bool):
    N, H, chunk = (512, 128, 128) if quick else (1024, 256, 256)
    print(f"\nCPU, reference path: lm head + cross-entropy fwd+bwd, {N} tokens, hidden {H}, fp32, "
          f"chunk {chunk}: peak extra resident memory (MiB)")
    print(f"{'vocab':>7} {'naive':>9} {'chunked':>9} {'naive/chunked':>14}   loss (naive, chunked)")
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "OMP_NUM_THREADS": "1"}
    figures = []
    for V in (32000, 65536, 128256):
        row = {}
        for variant in ("naive", "chunked"):
            proc = subprocess.run([sys.executable, __file__, "--child", variant, str(N), str(H), str(V), str(chunk)],
                                  env=env, capture_output=True, text=True, check=True)
            row[variant] = json.loads(proc.stdout.strip().splitlines()[-1])
        mib = {k: r["peak"] / 2**20 for k, r in row.items()}
        ratio = mib["naive"] / max(mib["chunked"], 1e-9)
        figures.append((V, ratio))
        print(f"{V:7d} {mib['naive']:9.1f} {mib['chunked']:9.1f} {ratio:13.1f}x   "
              f"({row['naive']['loss']:.4f}, {row['chunked']['loss']:.4f})")
    # What must be alive at the peak either way: the inputs' gradients (N*H + V*H floats).
    floor = (N * H + 128256 * H) * 4 / 2**20
    print(f"  (gradients of hidden and weight alone take {floor:.1f} MiB at vocab 128256)")
    return figures


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller shapes")
    ap.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        variant, *sizes = args.child
        return _child_memory(variant, *map(int, sizes))
    if torch.cuda.is_available():
        print(f"GPU: {torch.cuda.get_device_name()}")
        gpu_attention(args.quick)
        gpu_linear_ce_memory(args.quick)
        gpu_small_kernels(args.quick)
    else:
        print("CUDA is not available: skipping the GPU benchmarks (attention TFLOP/s vs SDPA/flash-attn, "
              "fused linear cross-entropy peak GPU memory vs lm_head + F.cross_entropy / Liger, "
              "RMSNorm/SwiGLU speed). The Triton kernels only run in the interpreter on a CPU, where "
              "their speed means nothing.")
    cpu_linear_ce_memory(args.quick)


if __name__ == "__main__":
    main()
