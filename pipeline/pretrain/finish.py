"""The end of a run (rank 0): final validation against the unigram floor, samples, and the
published files — weights, config, tokenizer, metrics, optimizer state, Hugging Face export.

Validation scores the tokens the objective predicts (objectives.scored_text says which), so
bits per byte = their summed loss / ln 2 / the UTF-8 bytes of the text among them (sentinels
and other special tokens are predicted, and count in the loss, but hold no bytes)."""
from __future__ import annotations

from pathlib import Path

from pipeline.core.train import evaluation, metrics
from pipeline.core.train.batches import eval_starts
from pipeline.core.train.loop import Trained, publish_run_files, throughput
from pipeline.core.train.objectives import scored_text


def publish(cfg, data, seq_len: int, out: Path, run: Trained, log, objective=None, loss_fn=None) -> dict:
    from pipeline.model import build
    from pipeline.model.io import save_model_dir

    weights, prec, device, stats = run.weights, run.precision, run.device, run.stats

    model = build(cfg.model).to(device)
    model.load_state_dict(weights)
    model.eval()
    tokenizer = data.dir / "tokenizer.json"

    starts = eval_starts(len(data.val), seq_len, cfg.final_eval_windows or None)
    nats, n = evaluation.loss_sums(model, data.val, starts, seq_len, cfg.train.batch_size, prec.autocast, device,
                                   objective=objective, loss_fn=loss_fn)
    per_token = evaluation.token_bytes(tokenizer, cfg.model.vocab_size)
    n_bytes = evaluation.target_bytes(data.val, starts, seq_len, per_token, objective)
    uni = evaluation.unigram_nats(data.train, data.val, starts, seq_len, cfg.model.vocab_size, objective=objective)
    texts = _samples(cfg, model, data, tokenizer, device, objective)

    save_model_dir(out, model, tokenizer, data.dir / "meta.json", state=weights, log=log)
    publish_run_files(run.ckpt_dir, out)
    (out / "samples.txt").write_text("\n\n".join(f"--- sample {i + 1}\n{t}" for i, t in enumerate(texts)) + "\n",
                                     encoding="utf-8")

    train_losses = [r["loss"] for r in metrics.read(out / "metrics.jsonl") if "loss" in r]
    stats.update({
        **throughput(stats),
        "arch": cfg.model.arch, "attention": cfg.model.attention, "objective": cfg.train.objective,
        "val_scored": scored_text(cfg.train, cfg.model),
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


def _samples(cfg, model, data, tokenizer: Path, device, objective) -> list[str]:
    """One sample per prompt: a decoder continues it (the inference engine); an encoder-decoder
    reads it (with a sentinel after it when the objective hides spans, so the decoder writes
    what would fill it) and its decoder's output follows ``=>``."""
    specials = data.meta.get("special_tokens", {})
    if cfg.model.arch != "encoder_decoder":
        return evaluation.samples(model, tokenizer, list(cfg.prompts), cfg.sample_tokens, cfg.sample_temperature,
                                  cfg.sample_top_k, cfg.seed, specials.get("eos"), device)
    import torch
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer))
    spans = any(d.kind == "spans" for _, d in objective.mix)
    sentinel = specials["sentinels"][:1] if spans else []
    texts = []
    for i, prompt in enumerate(cfg.prompts):
        ids = tok.encode(prompt).ids[-(cfg.model.max_seq_len - 1):] + sentinel
        out = model.generate(torch.tensor([ids], device=device), cfg.sample_tokens, start_id=specials["pad"],
                             temperature=cfg.sample_temperature, top_k=cfg.sample_top_k,
                             generator=torch.Generator(device=device).manual_seed(cfg.seed + i),
                             eos_id=specials.get("eos"))
        shown = tok.decode(ids, skip_special_tokens=False).removeprefix(tok.id_to_token(specials.get("bos", -1)) or "")
        texts.append(f"{shown} => {tok.decode(out[0, 1:].tolist(), skip_special_tokens=False)}")
    return texts
