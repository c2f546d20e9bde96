"""What to generate and how to pick each token: greedy, temperature, top-k, top-p, a seed per
request, stop strings, stop tokens, a token limit.

``filter_logits`` applies temperature, then top-k, then top-p, as Hugging Face's logits
warpers do in ``generate`` (the tests compare against them). Each request samples from its
own seeded ``torch.Generator``, so its tokens do not depend on what else is in the batch.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field

import torch


@dataclass
class SamplingParams:
    max_tokens: int = 16  # new tokens at most (OpenAI's completions default)
    temperature: float = 1.0  # 0 = greedy
    top_k: int = 0  # 0 = no top-k cut
    top_p: float = 1.0  # nucleus: the smallest set of tokens whose probability reaches top_p
    seed: int | None = None  # None = a fresh random seed
    stop: list[str] = field(default_factory=list)  # text that ends generation (not returned)
    stop_token_ids: list[int] = field(default_factory=list)  # besides the model's EOS
    ignore_eos: bool = False

    def __post_init__(self):
        if isinstance(self.stop, str):
            self.stop = [self.stop]
        self.stop = list(self.stop)
        self.stop_token_ids = [int(t) for t in self.stop_token_ids]
        checks = [
            ("max_tokens", isinstance(self.max_tokens, int) and self.max_tokens >= 1, "an integer >= 1"),
            ("temperature", _number(self.temperature) and 0 <= self.temperature <= 100, "a number in [0, 100]"),
            ("top_k", isinstance(self.top_k, int) and self.top_k >= 0, "an integer >= 0 (0 = off)"),
            ("top_p", _number(self.top_p) and 0 < self.top_p <= 1, "a number in (0, 1]"),
            ("seed", self.seed is None or isinstance(self.seed, int), "an integer"),
            ("stop", all(isinstance(s, str) and s for s in self.stop), "non-empty strings"),
        ]
        for name, ok, what in checks:
            if not ok or isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be {what}, got {getattr(self, name)!r}")

    @property
    def greedy(self) -> bool:
        # Below vLLM's 1e-5 the scaled logits can overflow to inf: sampling would be argmax anyway.
        return self.temperature < 1e-5

    def generator(self, device) -> torch.Generator:
        seed = self.seed if self.seed is not None else random.getrandbits(63)
        return torch.Generator(device=device).manual_seed(seed)


def _number(x) -> bool:
    return isinstance(x, (int, float))


def filter_logits(logits: torch.Tensor, temperature: float, top_k: int, top_p: float) -> torch.Tensor:
    """(B, V) float logits -> scaled logits with the tokens outside top-k / top-p at -inf."""
    logits = logits / temperature
    if top_k and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        # Ascending sort: drop the low tail whose total probability is <= 1 - top_p, keeping
        # at least the most likely token (as transformers' TopPLogitsWarper).
        sorted_logits, order = torch.sort(logits, dim=-1)
        tail = sorted_logits.softmax(-1).cumsum(-1) <= 1 - top_p
        tail[:, -1] = False
        logits = logits.masked_fill(tail.scatter(1, order, tail), float("-inf"))
    return logits


def sample(logits: torch.Tensor, params: list[SamplingParams], generators: list[torch.Generator]) -> list[int]:
    """One token per row of ``logits`` (B, V), row i drawn with params[i] and generators[i]."""
    logits = logits.float()
    picks = logits.argmax(-1).tolist()
    for i, p in enumerate(params):
        if p.greedy:
            continue
        row = filter_logits(logits[i:i + 1], p.temperature, p.top_k, p.top_p)
        picks[i] = int(torch.multinomial(row.softmax(-1), 1, generator=generators[i]))
    return picks
