"""Agreement with the real lm-evaluation-harness (a dev dependency: CI runs it).

The model is one the pipeline makes: a tokenizer trained by the tokenize stage (byte-level BPE
whose post-processor prepends BOS, so lm-eval's encoding path with special tokens is the one
taken) and a small random Transformer saved with ``save_model_dir``, whose ``hf/`` export is
what lm-eval loads (``--model hf``). We score the native model (our Transformer, no
conversion) and the export through transformers; lm-eval scores the export. Multiple choice
zero-shot and few-shot (contexts longer than the window: left truncation), and rolling
loglikelihood over documents of several windows. Per request, our loglikelihoods equal
lm-eval's within 1e-5; acc and acc_norm are identical; the perplexities within 1e-5.
"""
import dataclasses
import json
import math
import random

import numpy as np
import pytest
import torch

lm_eval = pytest.importorskip("lm_eval", reason="lm-eval is a dev dependency: pip install -e .[dev]")

from pipeline.core.docs import doc, shard_name, write_table  # noqa: E402
from pipeline.core.tasks import build_requests, load_task  # noqa: E402
from pipeline.evaluate.evaluator import evaluate  # noqa: E402
from pipeline.evaluate.models import load_hf, load_lm  # noqa: E402

WORDS = ("the of and to in a is that for it as was with be by on not he this are or his from at which but "
         "have an they you were her she there been one all we their has would when if so no time year people "
         "way day man thing woman life child world school state family student group country problem").split()
WINDOW = 48  # the model's max_seq_len: few-shot contexts and rolling documents exceed it


def _corpus(directory, n_docs=80):
    rng = random.Random(0)
    rows = [doc(f"doc:{i}", " ".join(rng.choice(WORDS) for _ in range(rng.randint(40, 90))).capitalize() + ".",
                "synthetic") for i in range(n_docs)]
    write_table(directory / shard_name(0), rows)
    (directory / "stats.json").write_text(json.dumps({"docs_kept": len(rows)}))


@pytest.fixture(scope="module")
def pipeline_model(tmp_path_factory):
    """A model directory as the pipeline writes one: tokenize stage's BPE + a random Transformer."""
    from pipeline.model.config import Config
    from pipeline.model.io import save_model_dir
    from pipeline.model.transformer import Transformer
    from pipeline.stage import execute
    from pipeline.tokenize import Config as TokenizeConfig

    root = tmp_path_factory.mktemp("lm_eval_model")
    _corpus(root / "docs")
    cfg = TokenizeConfig(vocab_size=400, n_sentinels=2, val_fraction=0.1, workers=1)
    execute("tokenize", dataclasses.asdict(cfg), {"docs": root / "docs"}, root / "tok")
    meta = json.loads((root / "tok/meta.json").read_text())
    torch.manual_seed(0)
    # init_std well above the default: a random model with opinions, so scores differ per choice
    model = Transformer(Config(vocab_size=meta["vocab_size"], n_layer=2, n_head=2, n_kv_head=1, d_model=32,
                               d_mlp=64, max_seq_len=WINDOW, init_std=0.3, kernels="torch")).eval()
    return save_model_dir(root / "model", model, root / "tok/tokenizer.json", root / "tok/meta.json")


def _task_files(directory):
    rng = random.Random(1)
    mc = [{"question": " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 9))),
           "choices": [" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 4))) for _ in range(4)],
           "label": i % 4} for i in range(12)]
    roll = [{"text": " ".join(rng.choice(WORDS) for _ in range(25 * (i + 1))).capitalize() + "."} for i in range(4)]
    for name, rows in (("mc", mc), ("roll", roll)):
        (directory / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    common = "dataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {path}\ntest_split: test\n"
    (directory / "mc.yaml").write_text(
        "task: mc\n" + common.format(path=directory / "mc.jsonl") + "output_type: multiple_choice\n"
        'fewshot_split: test\ndoc_to_text: "Question: {{question}}\\nAnswer:"\ndoc_to_choice: "{{choices}}"\n'
        "doc_to_target: label\nmetric_list:\n  - metric: acc\n  - metric: acc_norm\n")
    (directory / "roll.yaml").write_text(
        "task: roll\n" + common.format(path=directory / "roll.jsonl") + "output_type: loglikelihood_rolling\n"
        'doc_to_text: ""\ndoc_to_target: "{{text}}"\n')
    return directory


def _pair(logged: dict) -> tuple[str, str]:
    """(context, continuation) of a request as lm-eval logs it."""
    return tuple(logged) if isinstance(logged, (list, tuple)) else (logged["arg_0"], logged["arg_1"])


@pytest.fixture(scope="module")
def tasks(tmp_path_factory):
    return _task_files(tmp_path_factory.mktemp("lm_eval_tasks"))


def _run_lm_eval(model_dir, tasks, num_fewshot, tmp, monkeypatch):
    from lm_eval.tasks import TaskManager

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp / "hf-datasets"))
    return lm_eval.simple_evaluate(
        model="hf", model_args=f"pretrained={model_dir / 'hf'},dtype=float32,logits_cache=False", tasks=["mc", "roll"],
        num_fewshot=num_fewshot, batch_size=4, device="cpu", bootstrap_iters=0, log_samples=True,
        task_manager=TaskManager(include_path=str(tasks), include_defaults=False))


@pytest.fixture(scope="module")
def lm_eval_runs(pipeline_model, tasks, tmp_path_factory):
    """lm-eval's results by number of shots, each computed once for both of our loaders."""
    runs = {}

    def results(shots: int) -> dict:
        if shots not in runs:
            with pytest.MonkeyPatch.context() as mp:
                runs[shots] = _run_lm_eval(pipeline_model, tasks, shots, tmp_path_factory.mktemp("hf"), mp)
        return runs[shots]

    return results


@pytest.fixture(params=[0, 2], ids=["zero_shot", "two_shot"])
def lm_eval_results(request, lm_eval_runs):
    return request.param, lm_eval_runs(request.param)


@pytest.fixture(scope="module", params=["native", "hf"])
def our_lm(request, pipeline_model):
    if request.param == "native":
        lm, how = load_lm(pipeline_model, "native", batch_size=4)
        assert how == "native"
        return lm
    return load_hf(pipeline_model / "hf", batch_size=4)


def test_the_tokenizer_adds_bos_and_lm_eval_keeps_it(pipeline_model):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(pipeline_model / "hf"))
    ids = tok.encode("the world")
    assert ids[0] == tok.bos_token_id and tok.bos_token == "<|bos|>"  # the path the tiny test tokenizer never takes
    lm = load_hf(pipeline_model / "hf")
    assert lm.tok.encode("the world") == ids and lm.tok.encode_plain("the world") == ids[1:]


def test_multiple_choice_loglikelihoods_and_accuracy_equal_lm_eval(our_lm, lm_eval_results, tasks):
    shots, res = lm_eval_results
    task = load_task(str(tasks / "mc.yaml"), num_fewshot=shots)
    requests = build_requests(task)
    samples = sorted(res["samples"]["mc"], key=lambda s: s["doc_id"])
    assert len(samples) == len(requests) == 12
    if shots:  # the few-shot contexts are longer than the window: lm-eval truncates them on the left
        assert max(len(our_lm.tok.encode(c)) for r in requests for c, _ in r["pairs"]) > WINDOW
    ours = our_lm.loglikelihood([p for r in requests for p in r["pairs"]])
    theirs = [resp[0][0] for s in samples for resp in s["resps"]]
    assert [_pair(a) for s in samples for a in s["arguments"]] == [p for r in requests for p in r["pairs"]]
    np.testing.assert_allclose([ll for ll, _ in ours], theirs, rtol=1e-5)
    metrics = evaluate(our_lm, task)["metrics"]
    assert metrics["acc"] == res["results"]["mc"]["acc,none"]
    assert metrics["acc_norm"] == res["results"]["mc"]["acc_norm,none"]
    assert 0 < res["results"]["mc"]["acc,none"] < 1 or shots  # a random model: not a constant answer


def test_rolling_perplexities_equal_lm_eval(our_lm, lm_eval_results, tasks):
    _, res = lm_eval_results
    task = load_task(str(tasks / "roll.yaml"))
    texts = [d["text"] for d in task.docs]
    assert len(our_lm.tok.encode(texts[-1])) > 2 * WINDOW  # several rolling windows
    samples = sorted(res["samples"]["roll"], key=lambda s: s["doc_id"])
    theirs = [s["resps"][0][0] for s in samples]
    np.testing.assert_allclose(our_lm.loglikelihood_rolling(texts), theirs, rtol=1e-5)
    metrics = evaluate(our_lm, task)["metrics"]
    for name in ("word_perplexity", "byte_perplexity", "bits_per_byte"):
        assert metrics[name] == pytest.approx(res["results"]["roll"][f"{name},none"], rel=1e-5), name
    assert metrics["bits_per_byte"] == pytest.approx(math.log2(metrics["byte_perplexity"]), rel=1e-9)
