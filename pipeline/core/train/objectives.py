"""Pre-training objectives (``train.objective``) as the batches a step reads and the loss on them.

    lm               next token at every position: (inputs, targets) windows and the loop's lm_loss
    prefix_lm        per sequence, a prefix of uniformly random length is read (bidirectionally
                     under model.attention=prefix, by the encoder of an encoder-decoder) and the
                     rest is predicted
    span_corruption  T5's denoising: spans (train.noise_density of the tokens, train.mean_span_length
                     long on average) hidden behind the tokenizer's sentinels; the corrupted text
                     is read, the spans are predicted
    ul2              per sequence, one of UL2's three denoisers, drawn at the train.ul2_* rates:
                     R (span corruption as above), X (extreme: half the tokens hidden, spans of 8
                     on average), S (prefix LM). UL2's mode tokens are left out: the tokenizer
                     has none, so the mode is not told to the model.

This module is the configuration side (no torch: composing a config stays light); the
batches are built by objective_batches.py.
"""
from __future__ import annotations

from dataclasses import dataclass

OBJECTIVES = ("lm", "prefix_lm", "span_corruption", "ul2")
# UL2's X-denoiser at a corruption rate that still works on short CPU windows (UL2 pairs a 50%
# rate with spans of 3 and 8, and 15% with spans of 64).
EXTREME_DENSITY, EXTREME_SPAN = 0.5, 8.0


@dataclass(frozen=True)
class Denoiser:
    kind: str  # lm | prefix | spans
    noise_density: float = 0.0
    mean_span_length: float = 0.0


def mixture(tc) -> list[tuple[float, Denoiser]]:
    """(probability, denoiser) pairs of train config ``tc``; the probabilities sum to 1."""
    regular = Denoiser("spans", tc.noise_density, tc.mean_span_length)
    if tc.objective == "ul2":
        rates = [(tc.ul2_regular, regular), (tc.ul2_extreme, Denoiser("spans", EXTREME_DENSITY, EXTREME_SPAN)),
                 (tc.ul2_sequential, Denoiser("prefix"))]
        total = sum(r for r, _ in rates)
        return [(r / total, d) for r, d in rates if r > 0]
    return [(1.0, {"lm": Denoiser("lm"), "prefix_lm": Denoiser("prefix"), "span_corruption": regular}[tc.objective])]


def objective_problems(tc) -> list[str]:
    """The train config's objective settings that are out of range (TrainConfig.validate)."""
    problems = []
    if tc.objective not in OBJECTIVES:
        problems.append(f"train.objective must be one of {'|'.join(OBJECTIVES)}, got {tc.objective!r}")
    if not 0 < tc.noise_density < 1:
        problems.append(f"train.noise_density must be in (0, 1), got {tc.noise_density}")
    if tc.mean_span_length < 1:
        problems.append(f"train.mean_span_length must be >= 1, got {tc.mean_span_length}")
    rates = {"ul2_regular": tc.ul2_regular, "ul2_extreme": tc.ul2_extreme, "ul2_sequential": tc.ul2_sequential}
    if any(r < 0 for r in rates.values()) or sum(rates.values()) <= 0:
        problems.append(f"train.ul2_regular/ul2_extreme/ul2_sequential are rates >= 0 with a positive sum, got {rates}")
    return problems


def combination_problems(model, tc) -> list[str]:
    """Model x objective combinations that would train something other than what they say."""
    problems = []
    if model.attention == "prefix" and tc.objective == "lm":
        problems.append("model.attention=prefix with train.objective=lm has no prefix to attend to (it would train "
                        "a causal model): set train.objective=prefix_lm|span_corruption|ul2, or model.attention=causal")
    if model.arch == "encoder_decoder":
        if tc.objective == "lm":
            problems.append("model.arch=encoder_decoder with train.objective=lm gives the encoder nothing to read: "
                            "set train.objective=span_corruption|prefix_lm|ul2")
        if tc.tp > 1 or tc.pp > 1:
            problems.append("model.arch=encoder_decoder trains with data parallelism only: set train.tp=1 train.pp=1")
    if tc.objective != "lm" and tc.pp > 1:
        problems.append(f"train.pp > 1 trains next-token prediction only; train.objective={tc.objective} needs train.pp=1")
    return problems


def scored_text(tc, model) -> str:
    """What validation scores under this objective, in words (stats.json, the report)."""
    spans = (f"the hidden spans ({tc.noise_density:.0%} of the tokens, {tc.mean_span_length:g} long on average) "
             "with the sentinel opening each")
    how = "read by the encoder" if model.arch == "encoder_decoder" else (
        "read as a bidirectional prefix" if model.attention == "prefix" else "read causally")
    return {
        "lm": "every next token of each window, given the tokens before it",
        "prefix_lm": f"the tokens after a prefix of uniformly random length (the prefix {how})",
        "span_corruption": f"{spans} (the corrupted window {how})",
        "ul2": (f"per window one denoiser's targets, drawn at R {tc.ul2_regular:g} : X {tc.ul2_extreme:g} : "
                f"S {tc.ul2_sequential:g} (R: {spans}; X: {EXTREME_DENSITY:.0%} of the tokens in spans of "
                f"{EXTREME_SPAN:g}; S: the tokens after a random prefix), the visible part {how}"),
    }[tc.objective]
