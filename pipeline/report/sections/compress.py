"""Compression: every variant's size, bits per weight, nonzeros, held-out quality and latency,
and the size–quality frontier (size on disk against bits per byte, the base model marked).
Each compress step measures its base model too, so this section reads only compress steps."""
from pipeline.report.blocks import Heading, Para, Table, figure

EXPLAIN = (
    "Size is the bytes of model.safetensors (quantized weights packed, pruned weights still dense: "
    "zeros cost as much as any value). Bits/weight = 8 x size / parameters; linear bits/weight counts "
    "the block Linears only, as stored (codes + scales + zero points). Bits per byte and perplexity are "
    "pretraining's final evaluation (validation windows of the model's context, the loss summed over "
    "the bytes of the target tokens). Latency: greedy decoding on CPU, ms per generated token.")


def variant_label(stats: dict) -> str:
    return stats.get("label") or " + ".join(stats.get("methods") or ["?"])


def _rows(runs, ctx):
    rows, points, bases = [], [], {}
    for label, d in runs:
        s = ctx.stats(d)
        base = s["base"]
        base_key = (base["size_bytes"], base.get("val_bits_per_byte"))
        bases.setdefault(base_key, base)
        rows.append([variant_label(s), f"{label} ({d.name})", s["size_bytes"], round(s["size_ratio"], 3), s["bits_per_weight"],
                     s["linear_bits_per_weight"], s["params"], s["nonzeros"], s.get("val_perplexity", "-"),
                     s.get("val_bits_per_byte", "-"), s.get("bits_per_byte_increase", "-"),
                     s.get("latency_ms_per_token", "-"), round(s["compression_s"], 2)])
        if s.get("val_bits_per_byte") is not None:
            points.append((variant_label(s), s["size_bytes"], s["val_bits_per_byte"]))
    for b in bases.values():
        rows.insert(0, ["base", "", b["size_bytes"], 1.0, b["bits_per_weight"], b["linear_bits_per_weight"],
                        b["params"], b["nonzeros"], b.get("val_perplexity", "-"), b.get("val_bits_per_byte", "-"),
                        0.0, b.get("latency_ms_per_token", "-"), 0.0])
    return rows, points, [b for b in bases.values() if b.get("val_bits_per_byte") is not None]


def _frontier(points, bases):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for i, (label, size, bpb) in enumerate(points):
        ax.scatter(size / 1e6, bpb, color=f"C{i % 10}", s=40, label=label)
        ax.annotate(label, (size / 1e6, bpb), textcoords="offset points", xytext=(4, 4), fontsize=7)
    for b in bases:
        ax.scatter(b["size_bytes"] / 1e6, b["val_bits_per_byte"], marker="*", s=220, color="black",
                   label="base", zorder=3)
    ax.set_xlabel("size on disk (MB)")
    ax.set_ylabel("held-out bits per byte (lower is better)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.suptitle("Compression frontier")
    return fig


def render(ctx):
    runs = ctx.stage_dirs("compress")
    if not runs:
        return []
    rows, points, bases = _rows(runs, ctx)
    blocks = [Heading("Compression"), Para(EXPLAIN),
              Table(["variant", "step (key)", "size (bytes)", "size ratio", "bits/weight", "linear bits/weight",
                     "params", "nonzeros", "perplexity", "bits/byte", "bits/byte increase", "ms/token",
                     "compression s"], rows)]
    if points:
        blocks.append(figure(_frontier(points, bases), "Size on disk against held-out bits per byte; "
                             "the star is the uncompressed base model", "compress-frontier.png"))
    return blocks
