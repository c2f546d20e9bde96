"""Pretraining: loss curves, throughput and MFU, validation bits-per-byte beside the unigram
floor, and the samples of every pretrain run (runs of a sweep share one chart)."""
from pipeline.report.blocks import Heading, Para, Pre, Table, figure


def _records(d):
    from pipeline.core.train.metrics import read

    return read(d / "metrics.jsonl") if (d / "metrics.jsonl").is_file() else []


def _chart(runs):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    for i, (label, records) in enumerate(runs):
        color = f"C{i % 10}"
        train = [(r["step"], r["loss"]) for r in records if "loss" in r]
        val = [(r["step"], r["val_loss"]) for r in records if "val_loss" in r]
        if train:
            ax.plot(*zip(*train), color=color, lw=1.2, label=f"{label} train")
        if val:
            ax.plot(*zip(*val), color=color, lw=0, marker="o", ms=4, label=f"{label} validation")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.suptitle("Pretraining loss")
    return fig


def _mfu(stats: dict) -> str:
    if stats.get("mfu") is None:
        return f"n/a ({stats.get('peak_flops_source', 'no stated peak')})"
    source = stats.get("peak_flops_source", "")
    return f"{100 * stats['mfu']:.1f}%" + (" (CPU, stated peak)" if "CPU" in source else "")


def render(ctx):
    runs = ctx.stage_dirs("pretrain")
    if not runs:
        return []
    rows, curves, blocks = [], [], [Heading("Pretraining")]
    for label, d in runs:
        s = ctx.stats(d)
        rows.append([d.name, label, s["params"], s["steps"], s["tokens"], round(s["train_wall_s"], 1),
                     round(s["tokens_per_s"]), _mfu(s), s.get("final_train_loss"),
                     s["val_loss"], s["val_bits_per_byte"], s["unigram_bits_per_byte"]])
        curves.append((f"{label} {d.name}" if len(runs) > 1 else d.name, _records(d)))
    blocks.append(Para(
        "Validation bits per byte = summed next-token loss / ln 2 / UTF-8 bytes of the scored text, on "
        "held-out documents. The unigram column is the same measure for token frequencies counted on the "
        "training tokens: the floor a model that learned anything must beat. MFU = FLOPs per token "
        "(6 N + attention) x tokens/s / peak, against a stated peak only (a GPU's spec sheet, or "
        "train.peak_tflops); a CPU run without one shows n/a."))
    blocks.append(Table(["key", "step", "params", "steps", "tokens", "train s", "tokens/s", "MFU",
                         "final train loss", "val loss", "val bits/byte", "unigram bits/byte"], rows))
    blocks.append(figure(_chart(curves), "Training loss per step and validation loss (dots)",
                         "pretrain-loss.png"))
    for label, d in runs:
        samples = ctx.stats(d).get("samples") or []
        if samples:
            blocks.append(Heading(f"Samples ({label}, key {d.name})", 3))
            blocks.append(Pre("\n\n".join(samples)))
    return blocks
