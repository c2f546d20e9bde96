"""Privacy: exposure of the canary secrets planted into the raw data (Carlini et al. 2019)."""
from pipeline.report.blocks import Heading, Para, Table


def render(ctx):
    blocks = []
    for label, d in ctx.stage_dirs("evaluate"):
        c = ctx.stats(d).get("canaries")
        if not c:
            continue
        rows = c["results"]
        counts = [r["in_training_data"] for r in rows if r["in_training_data"] is not None]
        if not counts:
            where = "The training data was not checked for the canaries (no tokenize input)."
        elif sum(counts) == 0:
            where = ("No canary occurs in the tokenized training data: scrubbing removed them (or none were "
                     "planted), so the model cannot have memorised them and the exposure should stay near chance.")
        else:
            where = (f"The canaries occur {sum(counts)} times in the tokenized training data (scrubbing off or "
                     f"not catching them): the exposure below measures what the model memorised.")
        cap = rows[0]["max_exposure"] if rows else 0
        blocks.append(Heading(f"Canary exposure ({label}, key {d.name})"))
        blocks.append(Para(
            f"Each canary is ranked by log-likelihood among {c['config']['candidates']} random fillings of its "
            f"format; exposure = log2((candidates + 1) / rank), at most {cap:.2f} bits. A secret the model never "
            f"saw scores about 1 bit on average; a memorised one approaches the cap. {where} "
            f"Mean exposure: {c['mean_exposure']:.2f} bits."))
        blocks.append(Table(["canary", "format", "rank", "exposure (bits)", "copies in training data"],
                            [[r["id"], r["format"], r["rank"], round(r["exposure"], 2),
                              "-" if r["in_training_data"] is None else r["in_training_data"]] for r in rows]))
    return blocks
