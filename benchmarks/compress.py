"""Compression side by side: our stage vs llm-compressor and torchao on one trained model.

    python -m benchmarks.compress [--steps 600] [--batch 8] [--samples 128] [--eval-windows 256] [--threads 2]
    python -m benchmarks.compress --tokens results/tokenize/<key> --no-llmcompressor    (torchao rows only)

One model (conf/model/cpu_2m.yaml, widths multiples of 128) trained briefly on a sample of the
built-in corpus; one calibration set (``samples`` windows of its train tokens, the windows our
stage picks, handed to llm-compressor as a tokenized dataset); one held-out protocol (our
pretraining's final evaluation) for every model. Rows:

    GPTQ W4A16 (int4, groups of 128, symmetric, static act-order)   ours vs llm-compressor
    SparseGPT 50%, Wanda 50% (unstructured)                          ours vs llm-compressor
    int8 weight-only per channel                                     ours vs torchao Int8WeightOnlyConfig
    W8A8 (int8 weights, int8 dynamic per-token activations)          our SmoothQuant (a=0.5, and a
                                                                     searched) vs torchao
                                                                     Int8DynamicActivationInt8WeightConfig
    GPTQ vs round-to-nearest at 4 and 3 bits                         ours

llm-compressor pins its own transformers, so it runs in ``.venv-llmcompressor`` (created on
first use: a venv that sees this venv's torch through a .pth file and installs
llmcompressor==0.14.0.1 beside it; never committed). The model goes there as our Hugging
Face export; llm-compressor's result comes back as the dense weights it applies (its
quantized weights fake-quantized with its own scales), imported with our import_hf and scored
by the same code. torchao's int4 and 2:4 paths need CUDA (Int4WeightOnlyConfig asks for the
mslk kernels), so on CPU torchao is compared on its int8 configs. Cached under
results/bench-compress/ (data, base model); compressed variants are recomputed each run.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "results" / "bench-compress"
LLMC_VENV = ROOT / ".venv-llmcompressor"
LLMC_PIN = "llmcompressor==0.14.0.1"

LLMC_RECIPES = {
    "gptq_w4a16": "GPTQ W4A16", "gptq_w3a16": "GPTQ W3A16", "sparsegpt_50": "SparseGPT 50%", "wanda_50": "Wanda 50%"}


# -- the llm-compressor side (runs inside .venv-llmcompressor; imports only its packages) -----------

def _llmc_recipe(name: str):
    from llmcompressor.modifiers.gptq import GPTQModifier
    from llmcompressor.modifiers.pruning import WandaPruningModifier
    from llmcompressor.modifiers.pruning.sparsegpt import SparseGPTModifier

    # "re:.*lm_head", as llm-compressor's docs write it: its pruning modifiers match the ignore list
    # against names like "lm_head." and pruned the tied head (and with it the embedding) to 50%
    # under a plain "lm_head", which made its SparseGPT and Wanda rows +20 ppl worse than ours.
    ignore = ["re:.*lm_head"]
    if name == "gptq_w4a16":
        return GPTQModifier(targets="Linear", scheme="W4A16", ignore=ignore)
    if name == "gptq_w3a16":
        group = {"targets": ["Linear"], "weights": {"num_bits": 3, "type": "int", "symmetric": True,
                                                    "strategy": "group", "group_size": 128}}
        return GPTQModifier(config_groups={"group_0": group}, ignore=ignore)
    if name == "sparsegpt_50":
        return SparseGPTModifier(sparsity=0.5, mask_structure="0:0", targets=["Linear"], ignore=ignore)
    if name == "wanda_50":
        return WandaPruningModifier(sparsity=0.5, mask_structure="0:0", targets=["Linear"], ignore=ignore)
    raise ValueError(name)


def llmc_worker(recipe: str, model_dir: Path, calib: Path, out: Path) -> None:
    """oneshot(recipe) on the calibration ids; write the dense weights the result applies."""
    import torch
    from compressed_tensors.quantization.lifecycle.forward import fake_quantize
    from datasets import Dataset
    from llmcompressor import oneshot
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    ids = torch.load(calib, weights_only=True)
    ds = Dataset.from_dict({"input_ids": ids.tolist(), "attention_mask": torch.ones_like(ids).tolist()})
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    started = time.time()
    oneshot(model=model, dataset=ds, recipe=_llmc_recipe(recipe), num_calibration_samples=len(ids),
            max_seq_length=ids.shape[1], shuffle_calibration_samples=False)
    seconds = time.time() - started
    state = {}
    with torch.no_grad():
        for name, module in model.named_modules():
            scheme = getattr(module, "quantization_scheme", None)
            if isinstance(module, torch.nn.Linear) and scheme is not None and scheme.weights is not None:
                # static act-order keeps groups in column order: no g_idx to apply
                w = fake_quantize(module.weight, module.weight_scale, getattr(module, "weight_zero_point", None),
                                  scheme.weights)
                state[f"{name}.weight"] = w.detach().clone()
        for name, tensor in model.state_dict().items():
            if name.endswith(".weight") and name not in state and not name.startswith("lm_head"):
                state[name] = tensor.detach().clone()
    out.mkdir(parents=True, exist_ok=True)
    save_file(state, out / "model.safetensors")
    config = json.loads((model_dir / "config.json").read_text())
    (out / "config.json").write_text(json.dumps(config))
    (out / "timing.json").write_text(json.dumps({"compression_s": seconds}))


def llmc_python() -> Path:
    """The venv's python, created the first time (its torch is this venv's, via a .pth file)."""
    python = LLMC_VENV / "bin" / "python"
    if not python.is_file():
        base = Path(sys.base_prefix) / "bin" / "python3"
        subprocess.run([str(base), "-m", "venv", str(LLMC_VENV)], check=True)
        site = next(Path(p) for p in sys.path if p.endswith("site-packages") and Path(p).is_dir())
        pth = next((LLMC_VENV / "lib").glob("python*/site-packages")) / "lmdag_base.pth"
        pth.write_text(str(site) + "\n")
    ok = subprocess.run([str(python), "-c", "import llmcompressor"], capture_output=True).returncode == 0
    if not ok:
        subprocess.run([str(python), "-m", "pip", "install", "-q", LLMC_PIN], check=True)
    return python


# -- our side -------------------------------------------------------------------------------------

def build_data(work: Path) -> Path:
    from pipeline.stage import execute

    if not (work / "tokenize" / "stats.json").is_file():
        execute("collect", {"max_docs_per_source": 300, "max_doc_bytes": 120000, "shard_docs": 300,
                            "canaries": {"count": 0}}, {}, work / "collect")
        execute("tokenize", {"vocab_size": 4096, "train_max_bytes": 4_000_000, "val_fraction": 0.05, "workers": 2},
                {"docs": work / "collect"}, work / "tokenize")
    return work / "tokenize"


def model_config(vocab: int, seq_len: int = 0):
    from omegaconf import OmegaConf

    from pipeline.model import Config

    raw = OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "model" / "cpu_2m.yaml"))
    raw["vocab_size"], raw["kernels"] = vocab, "torch"
    if seq_len:
        raw["max_seq_len"] = seq_len
    return Config(**raw)


def train_base(tok: Path, out: Path, steps: int, batch: int, cfg) -> Path:
    """AdamW with warm-up and cosine decay on random train windows (the nanoGPT recipe)."""
    import math

    import torch

    from pipeline.core.tokens import TokenData
    from pipeline.model import Transformer
    from pipeline.model.io import is_model_dir, save_model_dir

    recipe = f"{steps}x{batch}" + ("" if cfg == model_config(cfg.vocab_size) else f" {cfg}")
    if is_model_dir(out) and (out / "steps.txt").read_text() == recipe:
        return out
    data = TokenData(tok)
    torch.manual_seed(0)
    model = Transformer(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, betas=(0.9, 0.95), weight_decay=0.1)
    gen = torch.Generator().manual_seed(0)
    for step in range(steps):
        lr = 3e-3 * min(1, (step + 1) / 20) * 0.5 * (1 + math.cos(math.pi * step / steps))
        for group in opt.param_groups:
            group["lr"] = lr
        x, y = data.get_batch("train", batch, model.cfg.max_seq_len, generator=gen)
        _, loss = model(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 25 == 0:
            print(f"  train step {step}/{steps} loss {loss.item():.3f}", flush=True)
    save_model_dir(out, model.eval(), tok / "tokenizer.json", tok / "meta.json")
    (out / "steps.txt").write_text(recipe)
    return out


def ours(base: Path, tok: Path, out: Path, methods: list[str], samples: int, windows: int, **settings) -> dict:
    from pipeline.model.io import load_model
    from pipeline.stage import execute

    config = {"methods": methods, "calibration_samples": samples, "eval_windows": windows, "progress": False, **settings}
    shutil.rmtree(out, ignore_errors=True)  # recomputed every run: a cached variant would hide a code change
    stats = execute("compress", config, {"model": base, "tokens": tok}, out)
    return {"ppl": stats["val_perplexity"], "bpb": stats["val_bits_per_byte"], "size": stats["size_bytes"],
            "latency_ms": stats["latency_ms_per_token"], "seconds": stats["compression_s"],
            "sparsity_linear": linear_sparsity(load_model(out)), "base": stats["base"]}


def linear_sparsity(model) -> float:
    """Fraction of zeros in the weights the block Linears apply."""
    from pipeline.compress.calibrate import block_linears
    from pipeline.model.quantized import dense_weight

    weights = [dense_weight(m) for m in block_linears(model).values()]
    return sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)


def score(model, tok: Path, windows: int, count_zeros: bool = True) -> dict:
    import torch

    from pipeline.compress.measure import heldout, latency_ms_per_token
    from pipeline.core.tokens import TokenData

    data = TokenData(tok)
    h = heldout(model, data, windows, 16)
    prompt = torch.from_numpy(data.val[:32].astype("int64"))[None, :]
    return {"ppl": h["val_perplexity"], "bpb": h["val_bits_per_byte"], "sparsity_linear": linear_sparsity(model) if count_zeros else None,
            "latency_ms": latency_ms_per_token(model, prompt, 32)}


def peer_llmc(recipe: str, base: Path, calib: Path, tok: Path, windows: int, work: Path) -> dict:
    import torch

    from pipeline.model.hf import import_hf
    from pipeline.model.io import load_model

    out = work / "llmc" / recipe
    shutil.rmtree(out, ignore_errors=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run([str(llmc_python()), "-m", "benchmarks.compress", "--llmc-worker", recipe, "--model", str(base / "hf"),
                    "--calib", str(calib), "--out", str(out)], check=True, cwd=ROOT, env=env)
    model = import_hf(out, kernels="torch").eval()
    if not torch.equal(model.embed.weight, load_model(base, kernels="torch").embed.weight):
        raise SystemExit(f"llm-compressor's {recipe} changed the embedding (a tied head it should have ignored): "
                         "the rows would not compare the same layers")
    return {**score(model, tok, windows), **json.loads((out / "timing.json").read_text())}


def peer_torchao(config_name: str, base: Path, tok: Path, windows: int, ours_dir: Path | None = None) -> dict:
    import torch
    import torchao.quantization as tq

    from pipeline.model.io import load_model

    model = load_model(base, kernels="torch")
    started = time.time()
    tq.quantize_(model, getattr(tq, config_name)(),
                 filter_fn=lambda m, fqn: isinstance(m, torch.nn.Linear) and fqn.startswith("blocks."))
    seconds = time.time() - started
    with torch.no_grad():
        # torchao's Int8Tensor implements no comparison ops: its zeros are not counted (nothing is pruned)
        scored = {**score(model, tok, windows, count_zeros=False), "compression_s": seconds}
    if ours_dir is not None:
        scored["codes"] = code_agreement(load_model(base, kernels="torch"), load_model(ours_dir), model)
    return scored


def code_agreement(base, mine, theirs) -> dict:
    """Our int8 codes against torchao's, weight by weight. Where they differ, w / scale is a tie
    (x.5 to float precision): we divide by the scale as compressed-tensors does, torchao
    multiplies by its reciprocal, and the two roundings break exact ties differently."""
    import torch

    from pipeline.compress.calibrate import block_linears

    total = differ = ties = 0
    for name, linear in block_linears(base).items():
        ours_q, scale = mine.get_submodule(name).codes(), mine.get_submodule(name).weight_scale
        theirs_q = theirs.get_submodule(name).weight.qdata
        d = ours_q != theirs_q
        frac = (linear.weight.detach().double() / scale.double())[d].abs() % 1
        total, differ, ties = total + d.numel(), differ + int(d.sum()), ties + int(((frac - 0.5).abs() < 1e-5).sum())
    return {"weights": total, "differ": differ, "differ_at_ties": ties}


def _row(label, base_ppl, mine, theirs=None, peer=""):
    inc = mine["ppl"] - base_ppl
    cells = f"{label:<36} ours ppl {mine['ppl']:9.4f} (+{inc:7.4f})"
    if theirs is None:
        return cells
    inc_p = theirs["ppl"] - base_ppl
    ratio = inc / inc_p if abs(inc_p) > 1e-9 else float("nan")
    return (cells + f" | {peer:<16} ppl {theirs['ppl']:9.4f} (+{inc_p:7.4f}) | increase ours/peer {ratio:5.2f} "
            f"{'OK' if inc <= inc_p + 1e-9 else 'WORSE'}")


def parse(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    # 150 steps left a base at perplexity ~480 whose every variant was within 0.2 of it: too weak to
    # tell the methods apart
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--samples", type=int, default=128)
    parser.add_argument("--eval-windows", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seq-len", type=int, default=0, help="the preset's context length unless given")
    parser.add_argument("--tokens", type=Path, help="a tokenize directory to use instead of the built-in sample")
    parser.add_argument("--work", type=Path, default=WORK)
    parser.add_argument("--no-llmcompressor", action="store_true", help="skip the llm-compressor rows")
    parser.add_argument("--llmc-worker")
    parser.add_argument("--model", type=Path)
    parser.add_argument("--calib", type=Path)
    parser.add_argument("--out", type=Path)
    return parser.parse_args(argv)


def run_ours(base, tok, work, samples, w) -> dict:
    v = work / "ours"
    return {
        "gptq4": ours(base, tok, v / "gptq4", ["gptq"], samples, w, act_order=True),
        "rtn4": ours(base, tok, v / "rtn4", ["rtn"], samples, w),
        "gptq3": ours(base, tok, v / "gptq3", ["gptq"], samples, w, act_order=True, bits=3),
        "rtn3": ours(base, tok, v / "rtn3", ["rtn"], samples, w, bits=3),
        "sparsegpt": ours(base, tok, v / "sparsegpt", ["sparsegpt"], samples, w),
        "wanda": ours(base, tok, v / "wanda", ["wanda"], samples, w),
        "int8": ours(base, tok, v / "int8", ["int8"], samples, w),
        "smoothquant": ours(base, tok, v / "smoothquant", ["smoothquant"], samples, w),
        "smoothquant_search": ours(base, tok, v / "smoothquant_search", ["smoothquant"], samples, w, smooth_grid=10),
    }


def report(args, mine, peers, seq) -> None:
    b = mine["gptq4"]["base"]
    print(f"\nbase: cpu_2m, {args.steps} steps of {args.batch} x {seq} tokens, held-out ppl {b['val_perplexity']:.3f}, "
          f"{b['val_bits_per_byte']:.4f} bits/byte, {b['size_bytes']:,} bytes; calibration {args.samples} x {seq} "
          f"tokens; {args.eval_windows} eval windows")
    bp = b["val_perplexity"]
    rows = [("GPTQ int4 g128 (W4A16)", "gptq4", "gptq_w4a16", "llm-compressor"),
            ("GPTQ int3 g128 (W3A16)", "gptq3", "gptq_w3a16", "llm-compressor"),
            ("SparseGPT 50% unstructured", "sparsegpt", "sparsegpt_50", "llm-compressor"),
            ("Wanda 50% unstructured", "wanda", "wanda_50", "llm-compressor"),
            ("int8 weight-only per channel", "int8", "int8wo", "torchao"),
            ("W8A8 (ours: SmoothQuant a=0.5)", "smoothquant", "w8a8", "torchao"),
            ("W8A8 (ours: SmoothQuant a searched)", "smoothquant_search", "w8a8", "torchao")]
    for label, m, p, peer in rows:
        print(_row(label, bp, mine[m], peers.get(p), peer) + ("" if p in peers else " | llm-compressor skipped"))
    for bits in (4, 3):
        g, r = mine[f"gptq{bits}"]["ppl"] - bp, mine[f"rtn{bits}"]["ppl"] - bp
        print(f"GPTQ vs round-to-nearest at {bits} bits: ppl increase {g:+.3f} vs {r:+.3f} -> "
              f"{'GPTQ better' if g < r else 'GPTQ NOT better'} (ratio {g / r if r else float('nan'):.2f})")
    c = peers["int8wo"]["codes"]
    print(f"int8 codes, ours vs torchao: {c['weights'] - c['differ']:,} of {c['weights']:,} equal; "
          f"{c['differ_at_ties']} of the {c['differ']} that differ are exact x.5 ties (rounded the other way)")
    print("\nzeros in the block Linears: " + ", ".join(
        f"ours {k} {mine[k]['sparsity_linear']:.3f}" for k in ("sparsegpt", "wanda")) + "".join(
        f", llm-compressor {k} {peers[k]['sparsity_linear']:.3f}" for k in ("sparsegpt_50", "wanda_50") if k in peers))
    print("latency ms/token (greedy, 32 tokens, no KV cache): base {:.2f}; ".format(b["latency_ms_per_token"]) + "; ".join(
        f"ours {k} {mine[k]['latency_ms']:.2f}" for k in ("int8", "gptq4", "smoothquant")) + "; " + "; ".join(
        f"torchao {k} {peers[k]['latency_ms']:.2f}" for k in ("int8wo", "w8a8")))
    print("compression s: " + ", ".join(f"ours {k} {m['seconds']:.1f}" for k, m in mine.items()) + "; " + ", ".join(
        f"{k} {p['compression_s']:.1f}" for k, p in peers.items()))


def main(argv=None) -> int:
    args = parse(argv)
    if args.llmc_worker:
        llmc_worker(args.llmc_worker, args.model, args.calib, args.out)
        return 0

    import torch

    from pipeline.compress.calibrate import calibration_ids
    from pipeline.core.tokens import TokenData

    torch.set_num_threads(args.threads)
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    tok = args.tokens or build_data(work)
    cfg = model_config(TokenData(tok).vocab_size, args.seq_len)
    base = train_base(tok, work / "base", args.steps, args.batch, cfg)
    calib = work / "calibration.pt"
    torch.save(calibration_ids(tok, args.samples, cfg.max_seq_len, 1234), calib)  # the windows our stage picks
    mine = run_ours(base, tok, work, args.samples, args.eval_windows)
    peers = {}
    if not args.no_llmcompressor:
        peers = {r: peer_llmc(r, base, calib, tok, args.eval_windows, work) for r in LLMC_RECIPES}
    peers["int8wo"] = peer_torchao("Int8WeightOnlyConfig", base, tok, args.eval_windows, work / "ours" / "int8")
    peers["w8a8"] = peer_torchao("Int8DynamicActivationInt8WeightConfig", base, tok, args.eval_windows)
    report(args, mine, peers, cfg.max_seq_len)
    return 0


if __name__ == "__main__":
    sys.exit(main())
