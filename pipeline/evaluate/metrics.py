"""Per-document scores and their aggregation, as lm-evaluation-harness defines them.

    acc         argmax of the choices' log-likelihoods is the gold choice
    acc_norm    the same after dividing each log-likelihood by the choice's length in
                characters (the leading target delimiter excluded), as lm-eval does
    perplexity  exp(-mean log-likelihood)   (output_type loglikelihood, e.g. LAMBADA)
    word_perplexity / byte_perplexity   exp(-sum ll / sum words|bytes)
    bits_per_byte                       -sum ll / sum bytes / ln 2
    exact_match with lm-eval's options (ignore_case, ignore_punctuation, regexes_to_ignore)
    squad_em / squad_f1  SQuAD's normalised exact match and token F1, max over gold answers
    bleu / chrf (sacrebleu, corpus level), rouge1 / rouge2 / rougeL (rouge-score, F-measure)

Mean metrics get lm-eval's stderr (sample std / sqrt n); corpus-level ones a seeded bootstrap.
"""
from __future__ import annotations

import collections
import math
import re
import string

import numpy as np

MEAN_METRICS = {"acc", "acc_norm", "acc_bytes", "exact_match", "squad_em", "squad_f1", "rouge1", "rouge2", "rougeL"}
CORPUS_METRICS = {"perplexity", "word_perplexity", "byte_perplexity", "bits_per_byte", "bleu", "chrf"}
HIGHER_IS_BETTER = {"perplexity": False, "word_perplexity": False, "byte_perplexity": False, "bits_per_byte": False}


def count_words(text: str) -> int:
    return len(re.split(r"\s+", text))  # lm-eval's count_words


def count_bytes(text: str) -> int:
    return len(text.encode("utf-8"))


def multiple_choice(lls: list[float], greedy: list[bool], choices: list[str], gold) -> dict:
    lls_a = np.array(lls)
    pred = int(np.argmax(lls_a))
    pred_norm = int(np.argmax(lls_a / np.array([float(len(c)) for c in choices])))
    pred_bytes = int(np.argmax(lls_a / np.array([float(len(c.encode("utf-8"))) for c in choices])))
    if isinstance(gold, str):
        gold = choices.index(gold) if gold in choices else -100
    golds = [g if g < len(choices) else -100 for g in gold] if isinstance(gold, list) else [gold if gold < len(choices) else -100]
    return {
        "acc": float(pred in golds), "acc_norm": float(pred_norm in golds), "acc_bytes": float(pred_bytes in golds),
        "exact_match": float(any(greedy[g] for g in golds if g != -100)),
        "random_baseline": 1.0 / len(choices), "pred": pred, "pred_norm": pred_norm, "gold": golds,
    }


def exact_match(prediction: str, reference: str, regexes_to_ignore=None, ignore_case=False,
                ignore_punctuation=False, ignore_numbers=False, **_) -> float:
    for r in regexes_to_ignore or []:
        prediction, reference = re.sub(r, "", prediction), re.sub(r, "", reference)
    if ignore_case:
        prediction, reference = prediction.lower(), reference.lower()
    if ignore_punctuation:
        table = str.maketrans("", "", string.punctuation)
        prediction, reference = prediction.translate(table), reference.translate(table)
    if ignore_numbers:
        table = str.maketrans("", "", string.digits)
        prediction, reference = prediction.translate(table), reference.translate(table)
    return float(prediction == reference)


def _squad_normalize(s: str) -> str:
    s = "".join(ch for ch in s.lower() if ch not in set(string.punctuation))
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


def squad_em(prediction: str, golds: list[str]) -> float:
    return max(float(_squad_normalize(prediction) == _squad_normalize(g)) for g in golds)


def squad_f1(prediction: str, golds: list[str]) -> float:
    def f1(pred: str, gold: str) -> float:
        p, g = _squad_normalize(pred).split(), _squad_normalize(gold).split()
        common = sum((collections.Counter(p) & collections.Counter(g)).values())
        if not p or not g:
            return float(p == g)
        if common == 0:
            return 0.0
        precision, recall = common / len(p), common / len(g)
        return 2 * precision * recall / (precision + recall)

    return max(f1(prediction, g) for g in golds)


_ROUGE = None


def rouge(prediction: str, golds: list[str]) -> dict:
    global _ROUGE
    if _ROUGE is None:
        from rouge_score import rouge_scorer

        _ROUGE = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    best: dict[str, float] = {}
    for g in golds:
        for k, v in _ROUGE.score(g, prediction).items():
            best[k] = max(best.get(k, 0.0), v.fmeasure * 100)
    return best


def _corpus(metric: str, items: list) -> float:
    if metric == "perplexity":
        return math.exp(-float(np.mean(items)))
    if metric in ("word_perplexity", "byte_perplexity", "bits_per_byte"):
        ll, n = np.array(items, dtype=float).T
        value = -ll.sum() / n.sum()
        return value / math.log(2) if metric == "bits_per_byte" else math.exp(value)
    import sacrebleu

    refs = [r if isinstance(r, list) else [r] for r, _ in items]
    width = max(len(r) for r in refs)
    # sacrebleu wants one stream per reference position; pad shorter lists with their first.
    streams = [[r[i] if i < len(r) else r[0] for r in refs] for i in range(width)]
    preds = [p for _, p in items]
    fn = sacrebleu.corpus_bleu if metric == "bleu" else sacrebleu.corpus_chrf
    return fn(preds, streams).score


def aggregate(metric: str, items: list, bootstrap_iters: int = 200, seed: int = 1234) -> tuple[float, float | None]:
    """(value, stderr) of one metric over per-document items."""
    if not items:
        return float("nan"), None
    if metric not in CORPUS_METRICS:
        arr = np.array(items, dtype=float)
        stderr = float(arr.std(ddof=1) / math.sqrt(len(arr))) if len(arr) > 1 else None
        return float(arr.mean()), stderr
    value = _corpus(metric, items)
    if bootstrap_iters <= 0 or len(items) < 2:
        return value, None
    rng = np.random.default_rng(seed)
    if metric in ("perplexity", "word_perplexity", "byte_perplexity", "bits_per_byte"):
        arr = np.array(items, dtype=float)
        idx = rng.integers(0, len(arr), size=(bootstrap_iters, len(arr)))
        if metric == "perplexity":
            reps = np.exp(-arr[idx].mean(axis=1))
        else:
            nll = -arr[idx, 0].sum(axis=1) / arr[idx, 1].sum(axis=1)
            reps = nll / math.log(2) if metric == "bits_per_byte" else np.exp(nll)
    else:  # bleu/chrf: a handful of corpus recomputations is enough for a rough stderr
        reps = np.array([_corpus(metric, [items[i] for i in rng.integers(0, len(items), len(items))])
                         for _ in range(min(bootstrap_iters, 50))])
    return value, float(reps.std(ddof=1))


def core_centered(acc: float, random_baseline: float) -> float:
    """nanochat/DCLM CORE: accuracy rescaled so chance is 0 and perfect is 1."""
    return (acc - random_baseline) / (1.0 - random_baseline)
