"""Architectures and pre-training tasks: the survey's families (causal decoder, prefix decoder,
encoder-decoder) and objectives (LM, prefix LM, span corruption, UL2) side by side, when the
pretrain runs of a sweep differ in them (conf/sweep/architectures.yaml)."""
from pipeline.report.blocks import Heading, Para, Table
from pipeline.report.sections.evaluation import main_metric

SCORING = (
    "Objective bits/byte: the validation loss on the tokens the objective predicts, summed, / ln 2 / the "
    "UTF-8 bytes of the text among them (sentinels are predicted and counted in the loss but hold no bytes), "
    "on the same held-out windows for every run; unigram: a unigram model of the objective's targets "
    "(frequencies from training windows) on the same tokens. Each objective predicts a different part "
    "of the text given a different visible part, so this column compares runs of one objective. "
    "Held-out bits/byte (evaluate) is the same measure for every model: every token of held-out "
    "documents in lm-evaluation-harness's rolling windows (BOS, or the token before a window, as context; "
    "an encoder-decoder reads that context in its encoder and scores the window with its decoder, as "
    "lm-eval's seq2seq models do). Tasks are scored by log-likelihood of each choice given the context "
    "(the prefix decoder reads the context as its bidirectional prefix, the encoder-decoder in its encoder).")
REFUSED = (
    "Refused before any work (when the DAG is planned): model.attention=prefix with train.objective=lm "
    "(no prefix: it would train a causal model); model.arch=encoder_decoder with train.objective=lm (the "
    "encoder would read nothing), or with pos_emb other than relative, qk_norm, untied embeddings, "
    "attention=prefix or virtual tokens (T5ForConditionalGeneration holds none of them), or with train.tp/pp > 1; "
    "train.pp > 1 with any objective but lm; model.pos_emb=sinusoidal in pretrain (no transformers class "
    "holds it). Fine-tuning, compression, GGUF export and the inference engine refuse an encoder-decoder "
    "model directory when their step starts; span corruption with too few tokenizer sentinels is refused "
    "when pretraining starts.")


def _evaluations(ctx, point, pretrain_step: str) -> list[dict]:
    found = []
    for p, name, entry in ctx.steps("evaluate"):
        d = ctx.results / name / entry["key"]
        if p is point and entry["inputs"].get("model") == pretrain_step and (d / "stats.json").is_file():
            found.append(ctx.stats(d))
    return found


def _rows(ctx) -> list[tuple[str, dict, dict]]:
    """(point, pretrain stats, {column: value} of its evaluation) of every finished pretrain run."""
    rows, seen = [], set()
    for p, name, entry in ctx.steps("pretrain"):
        d = ctx.results / name / entry["key"]
        if d in seen or not (d / "stats.json").is_file():
            continue
        seen.add(d)
        values = {}
        for s in _evaluations(ctx, p, name)[:1]:
            for task, r in s["results"].items():
                metric = main_metric(r["metrics"])
                values["held-out bits/byte (evaluate)" if task == "heldout" else f"{task} {metric}"] = r["metrics"][metric]
            if (s.get("core") or {}).get("core") is not None:
                values["CORE"] = s["core"]["core"]
        rows.append((p["name"], ctx.stats(d), values))
    return rows


def render(ctx):
    rows = _rows(ctx)
    kinds = {(s.get("arch", "decoder"), s.get("attention", "causal"), s.get("objective", "lm")) for _, s, _ in rows}
    if len(kinds) < 2:
        return []
    columns = []
    for _, _, values in rows:
        columns += [c for c in values if c not in columns]
    table = []
    for point, s, values in rows:
        table.append([point, s.get("arch", "decoder"), s.get("attention", "causal"), s.get("objective", "lm"),
                      s["params"], f"{s['flops_per_token'] / 1e6:.2f}", round(s["train_wall_s"], 1),
                      round(s["val_loss"], 4), round(s["val_bits_per_byte"], 4), round(s["unigram_bits_per_byte"], 4),
                      *[round(values[c], 4) if c in values else "-" for c in columns]])
    scored = sorted({(s.get("objective", "lm"), s.get("val_scored", "every next token")) for _, s, _ in rows})
    return [
        Heading("Architectures and pre-training tasks"),
        Para("The survey's model families and pre-training tasks trained on the same tokens for the same "
             "steps (equal sequence positions per step; FLOPs per token as computed from each model's shapes)."),
        Table(["point", "arch", "attention", "objective", "params", "MFLOP/token", "train s", "objective val loss",
               "objective bits/byte", "unigram bits/byte", *columns], table),
        Para(SCORING),
        Table(["objective", "validation scores"], [list(x) for x in scored]),
        Para(REFUSED),
    ]
