"""Agreement with lm-evaluation-harness on a tiny random Llama.

CI does not install lm-eval (it pulls datasets, pandas, accelerate, ...), so these tests check
our batched evaluator against a small independent implementation of lm-eval's documented
procedure: one unpadded forward pass per request, lm-eval's context/continuation encoding,
its rolling windows and its acc/acc_norm/bits-per-byte formulas. The last test runs the real
lm-eval when it is installed (`pip install -e .[bench]`); benchmarks/eval_agreement.py does it
on the built-in tasks.
"""
import math

import numpy as np
import pytest
import torch

from pipeline.evaluate.evaluator import evaluate
from pipeline.core.tasks import build_requests, load_task


def _reference_ll(model, tok, context: str, continuation: str, max_length: int) -> float:
    """lm-eval TemplateLM._encode_pair + HFLM._loglikelihood_tokens, for one request, no batching."""
    n = len(context) - len(context.rstrip())
    if n:
        context, continuation = context[:-n], context[-n:] + continuation
    whole = tok.encode(context + continuation)
    ctx = tok.encode(context)
    cont = whole[len(ctx):]
    inp = (ctx + cont)[-(max_length + 1):][:-1]
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([inp])).logits[0].float(), -1)
    pos = range(len(inp) - len(cont), len(inp))
    return float(sum(logp[p, t] for p, t in zip(pos, cont)))


def _reference_rolling(model, tok, text: str, max_length: int) -> float:
    """lm-eval utils.get_rolling_token_windows(context_len=1) + make_disjoint_window, written out."""
    ids = tok.encode(text)
    total, predicted = 0.0, 0
    windows = [([tok.bos_token_id], ids[:min(max_length, len(ids))])]
    predicted = len(windows[0][1])
    while predicted < len(ids):
        k = min(len(ids) - predicted, max_length)
        end = predicted + k
        a = ids[end - max_length - 1:end - 1]
        windows.append((a[:len(a) - (k - 1)], ids[end - k:end]))
        predicted += k
    for ctx, cont in windows:
        inp = (ctx + cont)[:-1]
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([inp])).logits[0].float(), -1)
        total += float(sum(logp[len(inp) - len(cont) + i, t] for i, t in enumerate(cont)))
    return total


@pytest.fixture(scope="module")
def hf(tiny_model):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(str(tiny_model)).eval(), AutoTokenizer.from_pretrained(str(tiny_model))


def test_multiple_choice_matches_reference(hf, tiny_lm, mc_task):
    model, tok = hf
    task = load_task(str(mc_task), num_fewshot=2)  # few-shot contexts exceed the 32-token window: truncation too
    ours = evaluate(tiny_lm, task)
    accs, norms = [], []
    for r in build_requests(task):
        lls = np.array([_reference_ll(model, tok, c, x, tiny_lm.max_length) for c, x in r["pairs"]])
        choices = r["doc"]["choices"]
        gold = r["doc"]["label"]
        accs.append(float(np.argmax(lls) == gold))
        norms.append(float(np.argmax(lls / np.array([len(c) for c in choices])) == gold))
    assert ours["metrics"]["acc"] == np.mean(accs)
    assert ours["metrics"]["acc_norm"] == np.mean(norms)
    assert ours["docs"] == 6


def test_loglikelihoods_match_reference_within_1e5(hf, tiny_lm, mc_task):
    model, tok = hf
    pairs = [p for r in build_requests(load_task(str(mc_task))) for p in r["pairs"]]
    ours = tiny_lm.loglikelihood(pairs)
    for (c, x), (ll, _) in zip(pairs, ours):
        ref = _reference_ll(model, tok, c, x, tiny_lm.max_length)
        assert abs(ll - ref) <= 1e-5 * abs(ref)


def test_rolling_bits_per_byte_matches_reference(hf, tiny_lm, rolling_task):
    model, tok = hf
    task = load_task(str(rolling_task))
    ours = evaluate(tiny_lm, task)
    texts = [d["text"] for d in task.docs]
    assert len(tiny_lm.tok.encode(texts[-1])) > 2 * tiny_lm.max_length  # several windows
    lls = [_reference_rolling(model, tok, t, tiny_lm.max_length) for t in texts]
    nbytes = sum(len(t.encode()) for t in texts)
    words = sum(len(t.split()) for t in texts)
    assert ours["metrics"]["bits_per_byte"] == pytest.approx(-sum(lls) / nbytes / math.log(2), rel=1e-5)
    assert ours["metrics"]["word_perplexity"] == pytest.approx(math.exp(-sum(lls) / words), rel=1e-5)


@pytest.mark.slow
def test_real_lm_eval_agrees(tiny_model, tiny_lm, mc_task, rolling_task, tmp_path, monkeypatch):
    lm_eval = pytest.importorskip("lm_eval")
    from lm_eval.tasks import TaskManager

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf"))
    for path in (mc_task, rolling_task):  # lm-eval wants absolute data_files
        path.write_text(path.read_text().replace(": mc.jsonl", f": {path.parent}/mc.jsonl").replace(": roll.jsonl", f": {path.parent}/roll.jsonl"))
    res = lm_eval.simple_evaluate(model="hf", model_args=f"pretrained={tiny_model},dtype=float32,logits_cache=False",
                                  tasks=["mc", "roll"], batch_size=4, device="cpu", bootstrap_iters=0,
                                  task_manager=TaskManager(include_path=str(mc_task.parent)))["results"]
    mc, roll = evaluate(tiny_lm, load_task(str(mc_task))), evaluate(tiny_lm, load_task(str(rolling_task)))
    assert mc["metrics"]["acc"] == res["mc"]["acc,none"]
    assert mc["metrics"]["acc_norm"] == res["mc"]["acc_norm,none"]
    assert roll["metrics"]["bits_per_byte"] == pytest.approx(res["roll"]["bits_per_byte,none"], rel=1e-5)
