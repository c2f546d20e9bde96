"""Contamination: how much of each eval set also appears in the training data (word n-grams)."""
from pipeline.report.blocks import Heading, Para, Table


def render(ctx):
    blocks = []
    for label, d in ctx.stage_dirs("evaluate"):
        c = ctx.stats(d).get("contamination")
        if not c:
            continue
        n = next(iter(c.values()))["n"] if c else 13
        blocks.append(Heading(f"Contamination ({label}, key {d.name})"))
        blocks.append(Para(
            f"An eval example is dirty when any of its {n}-word n-grams (lower-cased words; examples shorter "
            f"than {n} words as one n-gram of all their words, when at least 8) occurs in the "
            f"{ctx.stats(d).get('contamination_train_docs', '?')} training documents (GPT-3's definition). "
            f"The dedup stage can remove overlapping training documents (dedup.remove_eval_overlap; the index is pipeline/core/ngrams.py)."))
        blocks.append(Table(["task", "examples", "checked", "dirty", "dirty %", "n-grams shared %"],
                            [[t, r["examples"], r["checked"], r["dirty"], round(100 * r["dirty_fraction"], 2),
                              round(100 * r["ngram_overlap"], 3)] for t, r in c.items()]))
    return blocks
