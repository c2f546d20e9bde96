"""Dedup: clusters found, documents removed, the similarity of checked pairs, example clusters."""
import json

from pipeline.core.pii import redacted
from pipeline.report.blocks import Heading, Para, Pre, Table, figure


def _similarity_chart(hist: dict, threshold: float):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lows = [float(k) for k in hist]
    fig, ax = plt.subplots(figsize=(7, 2.6))
    ax.bar(lows, list(hist.values()), width=0.045, align="edge", color="#4c72b0")
    ax.axvline(threshold, color="#c44e52", linestyle="--", label=f"threshold {threshold}")
    ax.set_xlabel("Jaccard similarity of a candidate pair")
    ax.set_ylabel("pairs")
    ax.legend()
    return fig


def _example(cluster: dict) -> str:
    lines = [f"cluster of {cluster['size']} document(s)"]
    for m in cluster["members"]:
        snippet = " ".join(redacted(m["text"]).split())[:220]
        lines.append(f"  [{m['action']}] {m['id']} ({m['source']}): {snippet}")
    return "\n".join(lines)


def render(ctx):
    blocks = []
    for label, d in ctx.stage_dirs("dedup"):
        s = ctx.stats(d)
        lsh, buckets = s.get("lsh", {}), s.get("buckets", {})
        dropped = s.get("dropped", {})
        blocks.append(Heading(f"Dedup ({label}, key {d.name})"))
        blocks.append(Para(
            f"Exact duplicates (equal normalized text), then MinHash LSH over word {lsh.get('ngram')}-grams: "
            f"{lsh.get('bands')} bands x {lsh.get('rows')} rows of {lsh.get('num_perm')} permutations "
            f"for Jaccard >= {lsh.get('threshold')} (a pair at the threshold becomes a candidate with "
            f"probability {lsh.get('candidate_probability_at_threshold')}); candidates confirmed by "
            f"{lsh.get('verify')} Jaccard. One document is kept per cluster; every document's meta holds "
            f"dedup_cluster (the kept document's id) and dedup_cluster_size."))
        blocks.append(Table(["documents in", "kept", "exact duplicates removed", "near duplicates removed",
                             "clusters", "documents in clusters", "candidate pairs", "confirmed pairs"],
                            [[s["docs_in"], s["docs_kept"], dropped.get("exact_duplicate", 0),
                              dropped.get("near_duplicate", 0), s.get("clusters", 0), s.get("docs_in_clusters", 0),
                              s.get("verified_pairs", 0), s.get("confirmed_pairs", 0)]]))
        sizes = s.get("cluster_sizes", {})
        if sizes:
            blocks.append(Table(["cluster size", "clusters"], [[int(k), v] for k, v in sizes.items()]))
        hist = s.get("pair_similarity_histogram", {})
        if sum(hist.values()):
            blocks.append(figure(_similarity_chart(hist, lsh.get("threshold", 0.8)),
                                 "Similarity of the LSH candidate pairs: those right of the line were confirmed",
                                 f"dedup-similarity-{d.name}.png"))
        examples = d / "examples.jsonl"
        clusters = [json.loads(line) for line in examples.read_text().splitlines() if line] if examples.is_file() else []
        if clusters:
            blocks.append(Heading("Example clusters (near duplicates first)", 3))
            blocks += [Pre(_example(c)) for c in clusters]
    return blocks
