"""Encoder-decoder training step: ours (pipeline/model/encoder_decoder.py) vs transformers' T5.

    python -m benchmarks.encoder_decoder [--preset cpu_2m] [--batch 16] [--steps 5] [--rounds 3] [--threads 2]

Both models hold the same weights (ours exported with export_hf, loaded as
T5ForConditionalGeneration) and train on the same span-corruption batches of random tokens:
encoder input = the 256-token window with spans replaced by sentinels, decoder = the spans
(T5's 15% / mean span 3). A step is forward, loss, backward and an AdamW update, fp32, on
the same threads. Key/value heads are set equal to query heads (T5 has no grouped-query
attention, so both run the same computation). The order alternates between rounds and the
best round counts, so load from other work on the machine hurts both alike. Prints the
logits' largest difference, each side's tokens/s (encoder + decoder tokens) and the ratio.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from pipeline.model import Config, build
from pipeline.model.objectives import corrupt_spans, raw_length, seq2seq_batch

SPECIALS = ["<|bos|>", "<|endoftext|>", "<|pad|>"] + [f"<|sentinel_{i}|>" for i in range(32)]


def model_config(preset: str, vocab: int) -> Config:
    from omegaconf import OmegaConf

    from pipeline.config import compose

    m = OmegaConf.to_container(compose([f"model={preset}", f"tokenize.vocab_size={vocab}"]).model, resolve=True)
    m.update(arch="encoder_decoder", pos_emb="relative", attention="causal", n_kv_head=m["n_head"], kernels="torch")
    return Config(**m)


def batches(cfg: Config, batch: int, count: int, sentinels: list[int]) -> list[dict]:
    g = torch.Generator().manual_seed(0)
    n = raw_length(cfg.max_seq_len)
    out = []
    for _ in range(count):
        windows = torch.randint(len(SPECIALS), cfg.vocab_size, (batch, n), generator=g)
        out.append(seq2seq_batch([corrupt_spans(w, sentinels, generator=g) for w in windows], pad_id=2))
    return out


def export(model, directory: Path):
    from transformers import AutoModelForSeq2SeqLM

    from pipeline.model.hf import export_hf
    from pipeline.tokenize.bpe import train_bpe

    tok = train_bpe(["the quick brown fox jumps over the lazy dog " * 50], 300, SPECIALS, "gpt4", bos_token="<|bos|>")
    tok.save(str(directory / "tokenizer.json"))
    export_hf(model, directory / "tokenizer.json", directory / "hf")
    return AutoModelForSeq2SeqLM.from_pretrained(directory / "hf", dtype=torch.float32)


def ours_step(model, b):
    return model(b["enc"], b["dec"], b["targets"], enc_mask=b["enc_mask"])[1]


def t5_step(model, b):
    return model(input_ids=b["enc"], attention_mask=b["enc_mask"].long(), decoder_input_ids=b["dec"],
                 labels=b["targets"]).loss


def timed(model, step, data: list[dict], steps: int) -> float:
    """tokens/s of ``steps`` training steps (forward, loss, backward, AdamW) after one warm-up."""
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, foreach=True)

    def one(b):
        step(model, b).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    one(data[0])
    tokens = sum(int(b["enc_mask"].sum() + (b["targets"] != -100).sum()) for b in data[1:steps + 1])
    t0 = time.perf_counter()
    for b in data[1:steps + 1]:
        one(b)
    return tokens / (time.perf_counter() - t0)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="cpu_2m")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg = model_config(args.preset, 4096)
    torch.manual_seed(0)
    ours = build(cfg)
    with tempfile.TemporaryDirectory() as tmp:
        t5 = export(ours, Path(tmp))
    data = batches(cfg, args.batch, args.steps + 1, list(range(3, 3 + len(SPECIALS) - 3)))
    with torch.no_grad():
        b = data[0]
        diff = (ours(b["enc"], b["dec"], enc_mask=b["enc_mask"])[0]
                - t5(input_ids=b["enc"], attention_mask=b["enc_mask"].long(), decoder_input_ids=b["dec"]).logits).abs().max()
    print(f"{args.preset} as an encoder-decoder: {ours.num_params():,} parameters, {cfg.n_layer}+{cfg.n_layer} layers, "
          f"batch {args.batch} x (encoder {b['enc'].shape[1]}, decoder {b['dec'].shape[1]}) tokens, {args.threads} threads")
    print(f"logits: max |ours - T5ForConditionalGeneration| = {float(diff):.2e} (fp32, same weights)")
    best = {"ours": 0.0, "transformers T5": 0.0}
    for r in range(args.rounds):
        order = [("ours", ours, ours_step), ("transformers T5", t5, t5_step)]
        for name, model, step in (order if r % 2 == 0 else order[::-1]):
            best[name] = max(best[name], timed(model, step, data, args.steps))
    for name, rate in best.items():
        print(f"train step {name:>16}: {rate:10,.0f} tokens/s (best of {args.rounds})")
    print(f"ratio ours / transformers T5: {best['ours'] / best['transformers T5']:.2f}x")


if __name__ == "__main__":
    main()
