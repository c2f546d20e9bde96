"""Evaluation: every evaluated model's scores (value ± stderr), CORE, a chart and a few samples."""
import json

from pipeline.report.blocks import Heading, Para, Pre, Table, figure

CORE_DEFINITION = (
    "CORE (as in DCLM and nanochat): for each multiple-choice task, accuracy (acc_norm when the task "
    "reports it, else acc) centred on chance, (acc - random) / (1 - random), where random is the mean "
    "of 1 / number of choices over the task's examples; CORE is the mean over those tasks. 0 = chance, 1 = perfect.")
METRIC_NOTES = (
    "acc: the highest-likelihood choice is right; acc_norm: the same after dividing each choice's "
    "log-likelihood by its length in characters (lm-evaluation-harness's definitions). bits_per_byte: "
    "-sum log p / (bytes x ln 2) over the text, scored in disjoint windows that start after BOS; "
    "perplexity (LAMBADA): exp of the mean negative log-likelihood of the last word. ± is the standard error.")


def main_metric(metrics: dict) -> str:
    for m in ("acc_norm", "acc", "bits_per_byte"):
        if m in metrics:
            return m
    return next(iter(metrics))


def _chart(results: dict, core: dict, title: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(core["tasks"])
    fig, ax = plt.subplots(figsize=(8, 0.5 * len(names) + 1.4))
    accs = [results[n]["metrics"][core["tasks"][n]["metric"]] for n in names]
    ax.barh(names, accs, color="#4c72b0", label="model")
    ax.scatter([core["tasks"][n]["random_baseline"] for n in names], names, color="#c44e52", marker="|", s=300, label="chance")
    ax.set_xlim(0, 1)
    ax.set_xlabel("accuracy (acc_norm where reported)")
    ax.invert_yaxis()
    ax.legend(loc="lower right")
    ax.set_title(title)
    return fig


def _fmt(value, stderr) -> str:
    if value is None:
        return "-"
    text = f"{value:.4g}"
    return f"{text} ± {stderr:.2g}" if stderr is not None else text


def render(ctx):
    blocks = []
    for label, d in ctx.stage_dirs("evaluate"):
        s = ctx.stats(d)
        blocks.append(Heading(f"Evaluation ({label}, key {d.name})"))
        blocks.append(Para(f"Model {s.get('model', '?')}, loaded as {s.get('model_source', '?')}, context "
                           f"{s.get('max_length', '?')} tokens. {METRIC_NOTES}"))
        rows = []
        for task, r in s["results"].items():
            for m, v in r["metrics"].items():
                rows.append([task, m, _fmt(v, r["stderr"].get(m)), r["docs"], r["num_fewshot"]])
        blocks.append(Table(["task", "metric", "value", "examples", "shots"], rows))
        core = s.get("core") or {}
        if core.get("tasks"):
            blocks.append(Heading("CORE", 3))
            blocks.append(Para(CORE_DEFINITION))
            blocks.append(Table(["task", "metric", "chance", "centred"],
                                [[t, v["metric"], round(v["random_baseline"], 3), round(v["centered"], 4)]
                                 for t, v in core["tasks"].items()] + [["CORE", "", "", round(core["core"], 4)]]))
            blocks.append(figure(_chart(s["results"], core, f"Multiple-choice accuracy, evaluate {d.name}"),
                                 "Accuracy per task; the red mark is chance", f"eval-{d.name}.png"))
        samples = d / "samples.jsonl"
        if samples.is_file():
            shown = set()
            for line in samples.read_text().splitlines():
                item = json.loads(line)
                if item["task"] in shown:
                    continue
                shown.add(item["task"])
                body = item.get("context") or item.get("text") or ""
                tail = {k: item[k] for k in ("continuations", "response", "pred", "gold") if k in item}
                blocks.append(Pre(f"[{item['task']}] {body[-400:]}\n-> {json.dumps(tail, ensure_ascii=False)[:400]}"))
    return blocks
