"""Metric definitions: lm-eval's acc/acc_norm/bits-per-byte, SQuAD EM/F1, filters, CORE."""
import math

import pytest

from pipeline.evaluate import metrics as M
from pipeline.evaluate.evaluator import _apply_filter


def test_acc_norm_divides_by_choice_characters_without_the_delimiter():
    # raw argmax picks the short choice; per-character the long one wins
    lls = [-4.0, -6.0]
    r = M.multiple_choice(lls, [False, False], ["ab", "abcdefgh"], gold=1)
    assert (r["acc"], r["acc_norm"]) == (0.0, 1.0)
    assert r["random_baseline"] == 0.5
    # a string gold is looked up among the choices
    assert M.multiple_choice(lls, [True, False], ["ab", "abcdefgh"], gold="ab")["acc"] == 1.0


def test_corpus_metrics_and_stderr():
    items = [(-10.0, 5), (-30.0, 15)]
    assert M.aggregate("bits_per_byte", items, 0)[0] == pytest.approx(40 / 20 / math.log(2))
    assert M.aggregate("byte_perplexity", items, 0)[0] == pytest.approx(math.exp(2.0))
    assert M.aggregate("perplexity", [-1.0, -3.0], 0)[0] == pytest.approx(math.exp(2.0))
    value, stderr = M.aggregate("acc", [1, 0, 1, 1])
    assert value == 0.75 and stderr == pytest.approx(0.5 / 2)
    _, boot = M.aggregate("bits_per_byte", items * 5, bootstrap_iters=100)
    assert boot is not None and boot >= 0


def test_exact_match_options_follow_lm_eval():
    assert M.exact_match("The Answer!", "the answer", ignore_case=True, ignore_punctuation=True) == 1.0
    assert M.exact_match("The Answer!", "the answer") == 0.0
    assert M.exact_match("#### 1,234", "1234", regexes_to_ignore=[",", "(?s).*#### "]) == 1.0


def test_squad_em_and_f1():
    assert M.squad_em("The Eiffel Tower.", ["eiffel tower"]) == 1.0
    assert M.squad_f1("eiffel tower in paris", ["the Eiffel Tower"]) == pytest.approx(2 * 0.5 * 1 / 1.5)
    assert M.squad_f1("nothing", ["x", "nothing at all"]) == pytest.approx(2 * 1 * (1 / 3) / (1 + 1 / 3))


def test_bleu_chrf_rouge():
    assert M.aggregate("bleu", [(["the cat sat on the mat"], "the cat sat on the mat")] * 2, 0)[0] == pytest.approx(100)
    assert M.aggregate("chrf", [(["abc"], "xyz")], 0)[0] == pytest.approx(0)
    assert M.rouge("the cat sat", ["the cat sat"])["rougeL"] == pytest.approx(100)


def test_regex_filter_like_lm_eval():
    steps = [{"function": "regex", "regex_pattern": r"The answer is (\-?[0-9\.\,]+)."}, {"function": "take_first"}]
    # the greedy class keeps the period, as in lm-eval; gsm8k's regexes_to_ignore strips it
    assert _apply_filter(steps, "so... The answer is 42. Then", "t") == "42."
    assert M.exact_match("42.", "42", regexes_to_ignore=[r"\.$"]) == 1.0
    assert _apply_filter(steps, "no number", "t") == "[invalid]"
    flexible = [{"function": "regex", "group_select": -1, "regex_pattern": r"(-?[$0-9.,]{2,})|(-?[0-9]+)"}]
    assert _apply_filter(flexible, "5 apples and 17 pears", "t") == "17"


def test_core_centering():
    assert M.core_centered(0.25, 0.25) == 0.0
    assert M.core_centered(1.0, 0.5) == 1.0
    assert M.core_centered(0.625, 0.25) == pytest.approx(0.5)
