"""Training throughput: our pretrain step vs a plain nanoGPT-style loop, side by side.

    python -m benchmarks.train [--steps 20] [--threads 2] [--batch 16] [--preset cpu_2m]

Both train the same model (conf/model/<preset>, vocab 4096) on the same random token stream
with the same batch, sequence length, dtype and threads. The reference is nanoGPT's train.py
inner loop: random windows (get_batch), forward, loss.backward(), clip_grad_norm_, AdamW as
nanoGPT builds it on CPU (foreach; it asks for the fused kernel only on CUDA), zero_grad.
Ours is pipeline.core.train.loop.prepare + optimizer_step with the options named in each row
(fp32, fused AdamW, compiled blocks is the CPU recipe conf/train/cpu.yaml; bf16 autocast is
an option that pays only on CPUs with bf16 matmul units).
Each variant runs after a warm-up; the order alternates and the best of the rounds counts, so
other load on a shared machine hurts every variant alike. On CUDA it also prints MFU.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from pipeline.model import Config as ModelConfig
from pipeline.model import Transformer
from pipeline.core.train import metrics
from pipeline.core.train.batches import WindowSampler
from pipeline.core.train.distributed import Dist
from pipeline.core.train.loop import optimizer_step, prepare
from pipeline.core.train.config import Config as TrainConfig


def model_config(preset: str, vocab: int) -> ModelConfig:
    from omegaconf import OmegaConf

    from pipeline.config import compose

    m = OmegaConf.to_container(compose([f"model={preset}", f"tokenize.vocab_size={vocab}"]).model, resolve=True)
    return ModelConfig(**m)


def reference_loop(mcfg, tokens, batch, seq_len, steps, device, dtype):
    """nanoGPT train.py, reduced to what a step does (no eval, no logging)."""
    torch.manual_seed(0)
    model = Transformer(mcfg).to(device)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    use_fused = device.type == "cuda"  # nanoGPT: fused AdamW only on CUDA
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=1e-3, betas=(0.9, 0.95), fused=use_fused)
    ctx = torch.autocast(device.type, dtype=dtype) if dtype is not None else torch.autocast(device.type, enabled=False)
    gen = torch.Generator().manual_seed(0)

    def get_batch():
        ix = torch.randint(len(tokens) - seq_len, (batch,), generator=gen)
        x = torch.stack([torch.from_numpy(tokens[i:i + seq_len].astype(np.int64)) for i in ix])
        y = torch.stack([torch.from_numpy(tokens[i + 1:i + 1 + seq_len].astype(np.int64)) for i in ix])
        return x.to(device), y.to(device)

    def step():
        x, y = get_batch()
        with ctx:
            _, loss = model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    return step


def our_loop(mcfg, tokens, batch, seq_len, device, **options):
    torch.manual_seed(0)
    tc = TrainConfig(batch_size=batch, lr=1e-3, **options)
    model, opt, _, prec, scaler = prepare(Transformer(mcfg).to(device), tc, Dist(), device)
    sampler = WindowSampler(tokens, seq_len, seed=0)
    state = {"step": 0}

    def step():
        s = state["step"]
        state["step"] += 1
        loss, _, _ = optimizer_step(model, opt, scaler, prec, [sampler.batch(s * batch, batch)], tc, device)
        return loss

    return step


def timed(step, steps, device) -> float:
    """Seconds per step over ``steps`` steps (after the caller's warm-up)."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    t = time.perf_counter()
    for _ in range(steps):
        loss = step()
    float(loss.detach())
    sync()
    return (time.perf_counter() - t) / steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="cpu_2m")
    ap.add_argument("--vocab", type=int, default=4096)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-compile", action="store_true", help="leave out the torch.compile row (slow to start)")
    ap.add_argument("--no-bf16", action="store_true", help="leave out the CPU bf16 rows (slow without bf16 units)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    mcfg = model_config(args.preset, args.vocab)
    seq_len = mcfg.max_seq_len
    tokens = np.random.default_rng(0).integers(0, args.vocab, 2_000_000, dtype=np.int64).astype(np.uint16)
    low = torch.bfloat16 if device.type == "cuda" else None  # same dtype for both on each device

    variants = {"nanoGPT-style reference": reference_loop(mcfg, tokens, args.batch, seq_len, args.steps, device, low)}
    ours_default = dict(precision="bf16" if low is not None else "fp32")
    variants["ours, eager (fused AdamW)"] = our_loop(mcfg, tokens, args.batch, seq_len, device, **ours_default)
    if device.type == "cpu" and not args.no_bf16:
        variants["ours + bf16 autocast"] = our_loop(mcfg, tokens, args.batch, seq_len, device, precision="bf16")
        ref_bf16 = reference_loop(mcfg, tokens, args.batch, seq_len, args.steps, device, torch.bfloat16)
        variants["nanoGPT-style reference, bf16 autocast"] = ref_bf16
    if not args.no_compile:
        variants["ours + compile (conf/train/cpu.yaml)"] = our_loop(mcfg, tokens, args.batch, seq_len, device, compile=True, **ours_default)

    for name, step in variants.items():  # warm-up (and compilation) outside the timing
        for _ in range(3):
            step()
    best = {name: float("inf") for name in variants}
    names = list(variants)
    for r in range(args.rounds):
        for name in (names if r % 2 == 0 else names[::-1]):
            best[name] = min(best[name], timed(variants[name], args.steps, device))

    tokens_per_step = args.batch * seq_len
    with torch.device("meta"):  # sizes only
        flops_per_token = Transformer(mcfg).flops_per_token(seq_len)
    ref = tokens_per_step / best[names[0]]
    print(f"model {args.preset} (vocab {args.vocab}), batch {args.batch} x {seq_len}, {args.threads} threads, "
          f"device {device}, best of {args.rounds} x {args.steps} steps")
    print(f"{'variant':<42} {'tokens/s':>10} {'ratio vs reference':>20}")
    for name in names:
        rate = tokens_per_step / best[name]
        print(f"{name:<42} {rate:>10,.0f} {rate / ref:>19.2f}x")
    ours = tokens_per_step / best[names[1]]
    print(f"RATIO ours eager / reference (same dtype): {ours / ref:.2f}")
    compiled = [n for n in names if "compile" in n]
    if compiled:
        print(f"RATIO ours + compile / reference (same dtype): {tokens_per_step / best[compiled[0]] / ref:.2f}")
    if device.type == "cuda":
        peak, source = metrics.peak_flops(device, 0.0, args.threads)
        for name in names:
            rate = tokens_per_step / best[name]
            print(f"MFU {name}: {metrics.mfu(flops_per_token, rate, peak):.1%} (peak {peak / 1e12:.0f} TFLOP/s, {source})")
    else:
        print("MFU on GPU: skipped (no CUDA device here); the CPU MFU against a measured matmul peak is "
              f"{metrics.mfu(flops_per_token, ours, metrics.measured_cpu_peak(args.threads)):.1%}")


if __name__ == "__main__":
    main()
