"""Tokenizer: vocabulary, token counts, bytes per token on held-out text, encode speed, a sample."""
import json

from pipeline.report.blocks import Heading, Para, Pre, Table


def _pieces(sample: dict) -> str:
    """The sample cut at token boundaries: ``|`` between tokens, newlines shown as ⏎."""
    return "|".join(p.replace("\n", "⏎") for p in sample.get("pieces", []))


def render(ctx):
    rows, samples = [], []
    for label, d in ctx.stage_dirs("tokenize"):
        meta = json.loads((d / "meta.json").read_text())
        rows.append([d.name, label, meta["vocab_size"], meta["tokenizer_vocab_size"], meta["dtype"],
                     meta["train_tokens"], meta["val_tokens"], meta["val_text_bytes"],
                     meta["bytes_per_token_val"], meta["encode_mb_s"], meta["tokenizer_train_s"]])
        if meta.get("sample", {}).get("pieces"):
            samples.append((d.name, meta["sample"]))
    if not rows:
        return []
    blocks = [
        Heading("Tokenizer"),
        Para("Byte-level BPE trained on the training split; every document is stored as [bos] text [eos]. "
             "Bytes per token is measured on the held-out validation text (higher = better compression); "
             "bits per byte of a model on that text is its loss in bits times tokens / bytes."),
        Table(["key", "step", "vocab", "learned", "dtype", "train tokens", "val tokens", "val bytes",
               "bytes/token (val)", "encode MB/s", "BPE train s"], rows),
    ]
    for key, sample in samples:
        blocks += [Heading(f"A validation text in tokens (tokenize {key})", 3), Pre(_pieces(sample))]
    return blocks
