"""The end of a run (rank 0): final validation against the unigram floor, samples, and the
published files — weights, config, tokenizer, metrics, optimizer state, Hugging Face export."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from pipeline.core.train import checkpoint, evaluation
from pipeline.core.train.batches import eval_starts


def publish(cfg, data, weights: dict, seq_len: int, prec, out: Path, ckpt_dir: Path, device, log,
            stats: dict) -> dict:
    from pipeline.model import build
    from pipeline.model.io import save_model_dir

    model = build(cfg.model).to(device)
    model.load_state_dict(weights)
    model.eval()
    tokenizer = data.dir / "tokenizer.json"

    starts = eval_starts(len(data.val), seq_len, cfg.final_eval_windows or None)
    nats, n = evaluation.loss_sums(model, data.val, starts, seq_len, cfg.train.batch_size, prec.autocast, device)
    per_token = evaluation.token_bytes(tokenizer, cfg.model.vocab_size)
    n_bytes = evaluation.target_bytes(data.val, starts, seq_len, per_token)
    uni = evaluation.unigram_nats(data.train, data.val, starts, seq_len, cfg.model.vocab_size)
    eos = data.meta.get("special_tokens", {}).get("eos")
    texts = evaluation.samples(model, tokenizer, list(cfg.prompts), cfg.sample_tokens, cfg.sample_temperature,
                               cfg.sample_top_k, cfg.seed, eos, device)

    save_model_dir(out, model, tokenizer, data.dir / "meta.json", state=weights, log=log)
    last = checkpoint.latest(ckpt_dir)
    if last is not None:  # the optimizer & co. of the last step, to continue training from
        shutil.copy(last / "train_state.pt", out / "train_state.pt")
    shutil.copy(ckpt_dir / "metrics.jsonl", out / "metrics.jsonl")
    if (ckpt_dir / "tensorboard").is_dir():
        shutil.copytree(ckpt_dir / "tensorboard", out / "tensorboard")
    (out / "samples.txt").write_text("\n\n".join(f"--- sample {i + 1}\n{t}" for i, t in enumerate(texts)) + "\n",
                                     encoding="utf-8")

    train_losses = [r["loss"] for r in _records(out / "metrics.jsonl") if "loss" in r]
    trained_tokens = (stats["steps"] - stats["resumed_from_step"]) * stats["tokens_per_step"]
    tokens_per_s = trained_tokens / max(stats["train_wall_s"], 1e-9)
    peak_total = stats["peak_flops_per_process"] * stats["world_size"]
    stats.update({
        "tokens_per_s": round(tokens_per_s, 1),
        "mfu": round(stats["flops_per_token"] * tokens_per_s / peak_total, 4) if peak_total else None,
        "final_train_loss": train_losses[-1] if train_losses else None,
        "val_loss": nats / max(n, 1),
        "val_tokens_scored": n,
        "val_bytes_scored": n_bytes,
        "val_bits_per_byte": evaluation.bits_per_byte(nats, n_bytes),
        "unigram_val_loss": uni / max(n, 1),
        "unigram_bits_per_byte": evaluation.bits_per_byte(uni, n_bytes),
        "samples": texts,
    })
    log.info("val %.4f nats/token = %.4f bits/byte (unigram %.4f); %d tokens at %.0f tokens/s",
             stats["val_loss"], stats["val_bits_per_byte"], stats["unigram_bits_per_byte"],
             trained_tokens, tokens_per_s)
    return stats


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line]
