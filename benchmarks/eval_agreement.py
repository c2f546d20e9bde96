"""Our evaluator vs lm-evaluation-harness (`lm_eval --model hf`) on the same model and local tasks.

    pip install -e .[dev]            # lm-eval[hf] (a dev dependency: tests/evaluate/test_agreement.py)
    python benchmarks/eval_agreement.py [--limit 100] [--threads 2]

A random Llama (HF format, built here: no hub) is scored by both tools on the built-in tasks,
written out as lm-eval YAMLs with absolute data_files. Prints per task: acc and acc_norm
(must be identical), perplexity-type metrics (relative difference, must be <= 1e-5), and the
wall-time ratio lm-eval / ours (> 1: ours is faster). Both run in this process on the same
threads; lm-eval's datasets cache goes to a fresh temporary directory per run.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TASKS = ["hellaswag", "piqa", "arc_easy", "copa", "winogrande", "lambada", "wikitext_like"]


def _write_tasks(tmp: Path, limit: int) -> Path:
    """Our built-in task YAMLs with absolute data paths (lm-eval wants them), plus a rolling task."""
    import yaml

    from pipeline.core.tasks import builtin
    from pipeline.core.tasks import BUILTIN_DIR

    tdir = tmp / "tasks"
    tdir.mkdir()
    for name in TASKS[:-1]:
        cfg = yaml.safe_load((BUILTIN_DIR / f"{name}.yaml").read_text())
        files = cfg["dataset_kwargs"]["data_files"]
        for split, spec in files.items():
            files[split] = str(builtin.data_file(spec.removeprefix("builtin:")))
        (tdir / f"{name}.yaml").write_text(yaml.safe_dump(cfg, allow_unicode=True))
    # loglikelihood_rolling: LAMBADA passages as documents (word/byte perplexity, bits per byte)
    rows = [json.loads(line) for line in builtin.data_file("lambada/test.jsonl").open()][:limit]
    (tmp / "wikitext_like.jsonl").write_text("".join(json.dumps({"page": r["text"]}) + "\n" for r in rows))
    (tdir / "wikitext_like.yaml").write_text(yaml.safe_dump({
        "task": "wikitext_like", "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(tmp / "wikitext_like.jsonl")}},
        "output_type": "loglikelihood_rolling", "test_split": "test", "doc_to_text": "", "doc_to_target": "{{page}}"}))
    return tdir


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--limit", type=int, default=100, help="documents per task")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=16)
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    try:
        import lm_eval
        from lm_eval.tasks import TaskManager
    except ImportError:
        sys.exit("lm-eval is not installed: pip install -e .[dev]")
    from pipeline.evaluate.evaluator import evaluate
    from pipeline.evaluate.models import load_hf
    from pipeline.core.tasks import load_task
    from pipeline.evaluate.tiny import save_hf_model

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        model_dir = save_hf_model(tmp / "model", vocab_size=512, max_length=512, hidden=64, layers=2)
        tdir = _write_tasks(tmp, args.limit)

        t0 = time.perf_counter()
        lm = load_hf(model_dir, batch_size=args.batch_size)
        ours = {}
        for name in TASKS:
            ours[name] = evaluate(lm, load_task(str(tdir / f"{name}.yaml"), limit=args.limit), bootstrap_iters=0)["metrics"]
        t_ours = time.perf_counter() - t0

        os.environ.update(HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1", HF_DATASETS_CACHE=str(tmp / "hf-datasets"),
                          TOKENIZERS_PARALLELISM="false")
        t0 = time.perf_counter()
        res = lm_eval.simple_evaluate(model="hf", model_args=f"pretrained={model_dir},dtype=float32",
                                      tasks=TASKS, batch_size=args.batch_size, device="cpu", limit=args.limit,
                                      bootstrap_iters=0, task_manager=TaskManager(include_path=str(tdir)))["results"]
        t_lm_eval = time.perf_counter() - t0

    print(f"\n{'task':<15} {'metric':<16} {'ours':>14} {'lm-eval':>14}  agreement")
    ok = True
    for name in TASKS:
        for metric, value in ours[name].items():
            theirs = res[name][f"{metric},none"]
            if metric in ("acc", "acc_norm"):
                good = value == theirs
                verdict = "identical" if good else "DIFFERENT"
            else:
                rel = abs(value - theirs) / abs(theirs)
                good = rel <= 1e-5
                verdict = f"rel diff {rel:.1e}" + ("" if good else "  > 1e-5!")
            ok &= good
            print(f"{name:<15} {metric:<16} {value:>14.6g} {theirs:>14.6g}  {verdict}")
    print(f"\n{len(TASKS)} tasks x {args.limit} docs, {args.threads} threads, batch {args.batch_size}")
    print(f"wall time: ours {t_ours:.1f}s, lm-eval {t_lm_eval:.1f}s, ratio lm-eval/ours = {t_lm_eval / t_ours:.2f}x")
    print("AGREEMENT: all acc/acc_norm identical, perplexities within 1e-5" if ok else "AGREEMENT FAILED")


if __name__ == "__main__":
    main()
