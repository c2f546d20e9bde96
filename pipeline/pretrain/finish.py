"""The end of a run (rank 0): final validation against the unigram floor, samples, and the
published files — weights, config, tokenizer, metrics, optimizer state, Hugging Face export."""
from __future__ import annotations

from pathlib import Path

from pipeline.core.train import evaluation, metrics
from pipeline.core.train.batches import eval_starts
from pipeline.core.train.loop import Trained, publish_run_files, throughput


def publish(cfg, data, seq_len: int, out: Path, run: Trained, log) -> dict:
    from pipeline.model import build
    from pipeline.model.io import save_model_dir

    weights, prec, device, stats = run.weights, run.precision, run.device, run.stats

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
    publish_run_files(run.ckpt_dir, out)
    (out / "samples.txt").write_text("\n\n".join(f"--- sample {i + 1}\n{t}" for i, t in enumerate(texts)) + "\n",
                                     encoding="utf-8")

    train_losses = [r["loss"] for r in metrics.read(out / "metrics.jsonl") if "loss" in r]
    stats.update({
        **throughput(stats),
        "final_train_loss": train_losses[-1] if train_losses else None,
        "val_loss": nats / max(n, 1),
        "val_tokens_scored": n,
        "val_bytes_scored": n_bytes,
        "val_bits_per_byte": evaluation.bits_per_byte(nats, n_bytes),
        "unigram_val_loss": uni / max(n, 1),
        "unigram_bits_per_byte": evaluation.bits_per_byte(uni, n_bytes),
        "samples": texts,
    })
    log.info("val %.4f nats/token = %.4f bits/byte (unigram %.4f); %.0f tokens/s",
             stats["val_loss"], stats["val_bits_per_byte"], stats["unigram_bits_per_byte"], stats["tokens_per_s"])
    return stats
