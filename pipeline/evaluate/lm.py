"""The model interface the evaluator talks to, shaped like lm-evaluation-harness's ``LM``.

    loglikelihood([(context, continuation), ...])  -> [(logprob, is_greedy), ...]
    loglikelihood_rolling([text, ...])             -> [logprob, ...]   (disjoint windows, BOS first)
    generate_until([(context, gen_kwargs), ...])   -> [text, ...]      (greedy, cut at stop strings
                                                                         and at ``stop_ids`` tokens)

``CausalLM`` implements all three for any causal model given as a function from token ids
(B, T) to logits (B, T, V): our own ``pipeline.model.Transformer``, a transformers model, or
a fine-tuned/compressed variant (they plug in the same way). Tokenization, windows and
truncation follow lm-eval's HFLM step by step, so both tools score the same tokens. A prefix
decoder (model.attention=prefix) reads each context as its bidirectional prefix.

``Seq2SeqLM`` is the same interface for an encoder-decoder, as lm-eval's seq2seq models: the
context goes to the encoder, the continuation is scored (or generated) by the decoder from
its start token; rolling log-likelihoods use the same windows, each window's context (BOS,
or the token before it) in the encoder.
"""
from __future__ import annotations

from typing import Callable, Protocol, Sequence

import torch
import torch.nn.functional as F
from tqdm import tqdm

from pipeline.core.errors import StageError


class LM(Protocol):
    def loglikelihood(self, requests: Sequence[tuple[str, str]]) -> list[tuple[float, bool]]: ...

    def loglikelihood_rolling(self, texts: Sequence[str]) -> list[float]: ...

    def generate_until(self, requests: Sequence[tuple[str, dict]]) -> list[str]: ...


class Tokenizer:
    """A ``tokenizers.Tokenizer`` (tokenizer.json) with the BOS/EOS ids lm-eval would use."""

    def __init__(self, tok, bos_id: int | None, eos_id: int | None):
        self.tok, self.bos_id, self.eos_id = tok, bos_id, eos_id

    @classmethod
    def from_file(cls, path, bos_token: str | None = None, eos_token: str | None = None) -> "Tokenizer":
        from tokenizers import Tokenizer as RawTokenizer

        tok = RawTokenizer.from_file(str(path))
        bos = tok.token_to_id(bos_token) if bos_token else None
        eos = tok.token_to_id(eos_token) if eos_token else None
        return cls(tok, bos, eos)

    @property
    def prefix_id(self) -> int:
        # lm-eval HFLM.prefix_token_id: BOS if the tokenizer has one, else EOS.
        return self.bos_id if self.bos_id is not None else self.eos_id

    def token_text(self, token_id: int) -> str:
        return self.tok.id_to_token(token_id) or ""

    def _encode(self, text: str, special: bool) -> list[int]:
        return self.tok.encode(text, add_special_tokens=special).ids

    def encode(self, text: str) -> list[int]:
        # lm-eval's tok_encode: the tokenizer's own special-token template, except when the
        # text already starts with the BOS string.
        prefix = self.prefix_id
        special = not (prefix is not None and text.startswith(self.token_text(prefix) or "\0"))
        return self._encode(text, special)

    def encode_plain(self, text: str) -> list[int]:
        return self._encode(text, False)

    def decode(self, ids: list[int]) -> str:
        return self.tok.decode(ids, skip_special_tokens=True)


class HFTokenizer(Tokenizer):
    """A transformers tokenizer (an exported model's): encodes exactly as lm-eval's HFLM does."""

    def __init__(self, hf_tok):
        super().__init__(hf_tok, hf_tok.bos_token_id, hf_tok.eos_token_id)

    def token_text(self, token_id: int) -> str:
        return self.tok.decode([token_id], skip_special_tokens=False)

    def _encode(self, text: str, special: bool) -> list[int]:
        return self.tok.encode(text, add_special_tokens=special)

    def decode(self, ids: list[int]) -> str:
        return self.tok.decode(ids, skip_special_tokens=True)


def logits_fn(model) -> Callable[..., torch.Tensor]:
    """Token ids -> logits for our Transformer (returns (logits, loss)) or a transformers model;
    ``prefix_len`` (B,) reaches a prefix decoder."""

    def call(ids: torch.Tensor, prefix_len: torch.Tensor | None = None) -> torch.Tensor:
        out = model(ids) if prefix_len is None else model(ids, prefix_len=prefix_len)
        if isinstance(out, tuple):
            return out[0]
        return out.logits if hasattr(out, "logits") else out

    return call


class CausalLM:
    """Batched scoring and greedy generation for a causal LM (see the module docstring)."""

    def __init__(self, forward: Callable[..., torch.Tensor], tokenizer: Tokenizer,
                 max_length: int, batch_size: int = 16, device: str = "cpu", max_gen_toks: int = 256,
                 progress: bool | None = None, prefix_context: bool = False):
        self.forward, self.tok, self.max_length = forward, tokenizer, max_length
        self.batch_size, self.device, self.max_gen_toks = batch_size, device, max_gen_toks
        self.progress = progress
        # A prefix decoder: ``forward(ids, prefix_len)`` with each row's context length.
        self.prefix_context = prefix_context
        # Tokens that end a generation besides EOS: a chat model's end-of-turn marker, which
        # decoding drops from the text (it is special), so no stop string could see it.
        self.stop_ids: set[int] = set()

    # -- scoring ---------------------------------------------------------------------------
    def _encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        if context == "":
            cont = self.tok.encode_plain(continuation)
            prefix = self.tok.prefix_id
            return ([prefix], cont) if prefix != cont[0] else (cont[:1], cont[1:])
        # Trailing spaces of the context belong to the continuation (word-boundary tokens).
        n_spaces = len(context) - len(context.rstrip())
        if n_spaces:
            context, continuation = context[:-n_spaces], context[-n_spaces:] + continuation
        whole = self.tok.encode(context + continuation)
        ctx = self.tok.encode(context)
        return ctx, whole[len(ctx):]

    def loglikelihood(self, requests):
        return self.score_tokens([self._encode_pair(c, x) for c, x in requests])

    @torch.no_grad()
    def score_tokens(self, pairs: list[tuple[list[int], list[int]]], desc: str = "loglikelihood") -> list[tuple[float, bool]]:
        """Sum of log p(continuation | context) and whether it is the greedy continuation.

        Longest first, so each batch pads little; identical (context + continuation) inputs
        are computed once (lm-eval's Collator does the same).
        """
        inputs = []
        clipped = []
        for ctx, cont in pairs:
            if not cont:
                raise ValueError("empty continuation: nothing to score")
            # lm-eval asserts here; a continuation longer than the model's window is scored
            # on its last max_length tokens instead of stopping the whole evaluation.
            cont = cont[-self.max_length:]
            clipped.append((ctx, cont))
            inputs.append((ctx + cont)[-(self.max_length + 1):][:-1])
        pairs = clipped
        order = sorted(range(len(pairs)), key=lambda i: (-len(inputs[i]), inputs[i]))
        results: list[tuple[float, bool] | None] = [None] * len(pairs)
        bar = tqdm(total=len(pairs), desc=desc, disable=None if self.progress is None else not self.progress, leave=False)
        for start in range(0, len(order), self.batch_size):
            idx = order[start:start + self.batch_size]
            width = len(inputs[idx[0]])
            batch = torch.zeros(len(idx), width, dtype=torch.long)
            for row, i in enumerate(idx):
                batch[row, :len(inputs[i])] = torch.tensor(inputs[i])
            # the context part of each input: everything up to the position predicting cont[0]
            prefix = torch.tensor([len(inputs[i]) - len(pairs[i][1]) + 1 for i in idx], device=self.device)
            logits = self.forward(batch.to(self.device), prefix) if self.prefix_context else self.forward(batch.to(self.device))
            logprobs = F.log_softmax(logits.float(), dim=-1)
            for row, i in enumerate(idx):
                cont = pairs[i][1]
                n = len(inputs[i])
                lp = logprobs[row, n - len(cont):n]
                target = torch.tensor(cont, device=lp.device)
                greedy = bool((lp.argmax(-1) == target).all())
                results[i] = (float(lp.gather(1, target[:, None]).sum()), greedy)
            bar.update(len(idx))
        bar.close()
        return results  # type: ignore[return-value]

    def rolling_windows(self, ids: list[int]) -> list[tuple[list[int], list[int]]]:
        """lm-eval's get_rolling_token_windows(context_len=1) + make_disjoint_window."""
        if not ids:
            return []
        if self.tok.prefix_id is None:
            raise StageError("rolling loglikelihood needs a BOS or EOS token to open the first window (as lm-eval's "
                             "prefix_token_id): the model's tokenizer declares neither")
        L = self.max_length
        first = min(L, len(ids))
        windows = [([self.tok.prefix_id], ids[:first])]
        predicted = first
        while predicted < len(ids):
            n = min(len(ids) - predicted, L)
            end = predicted + n
            ctx = ids[max(end - L - 1, 0):end - 1]
            windows.append((ctx[:len(ctx) - (n - 1)], ids[end - n:end]))
            predicted += n
        return windows

    def loglikelihood_rolling(self, texts):
        windows, owner = [], []
        for i, text in enumerate(texts):
            for w in self.rolling_windows(self.tok.encode(text)):
                windows.append(w)
                owner.append(i)
        totals = [0.0] * len(texts)
        for i, (ll, _) in zip(owner, self.score_tokens(windows, desc="rolling loglikelihood")):
            totals[i] += ll
        return totals

    # -- generation ------------------------------------------------------------------------
    @torch.no_grad()
    def generate_until(self, requests):
        """Greedy decoding, stopped at the first stop string (EOS included, as lm-eval adds it)."""
        eos_text = self.tok.token_text(self.tok.eos_id) if self.tok.eos_id is not None else None
        jobs = []
        for context, kwargs in requests:
            kwargs = dict(kwargs or {})
            until = kwargs.get("until") or []
            until = [until] if isinstance(until, str) else list(until)
            if eos_text and eos_text not in until:
                until.append(eos_text)
            jobs.append((context, until, int(kwargs.get("max_gen_toks", self.max_gen_toks))))
        return [self.cut_at_stops(new, until) for new, (_, until, _) in zip(self.greedy_all(jobs), jobs)]

    def greedy_all(self, jobs: list[tuple[str, list[str], int]]) -> list[list[int]]:
        """New token ids for each (context, stop strings, max new tokens): one request at a
        time, a full forward per token (any model; engine_lm.EngineLM batches native ones)."""
        return [self._greedy(c, until, n) for c, until, n in tqdm(jobs, desc="generate", disable=None, leave=False)]

    def cut_at_stops(self, new: list[int], until: list[str]) -> str:
        text = self.tok.decode(new)
        for s in until:
            if s:
                text = text.split(s)[0]
        return text

    def _context_ids(self, context: str, max_new: int) -> list[int]:
        return self.tok.encode(context)[-(self.max_length - max_new):]

    def _next_token(self, ids: list[int], new: list[int]) -> int:
        window = (ids + new)[-self.max_length:]
        x = torch.tensor([window], device=self.device)
        if self.prefix_context:  # the context part of the window is the prefix
            return int(self.forward(x, torch.tensor([max(len(window) - len(new), 0)], device=self.device))[0, -1].argmax())
        return int(self.forward(x)[0, -1].argmax())

    def _greedy(self, context: str, until: list[str], max_new: int) -> list[int]:
        """Greedy tokens after ``context`` until EOS, a stop id or a stop string."""
        ids = self._context_ids(context, max_new)
        new: list[int] = []
        for _ in range(max_new):
            nxt = self._next_token(ids, new)
            if nxt == self.tok.eos_id or nxt in self.stop_ids:
                break
            new.append(nxt)
            if any(s and s in self.tok.decode(new) for s in until):
                break
        return new


class Seq2SeqLM(CausalLM):
    """An encoder-decoder behind the same interface: ``forward(enc_ids, enc_mask, dec_ids) ->
    logits`` (B, U, V); the decoder starts from ``start_id`` (see the module docstring)."""

    def __init__(self, forward: Callable[..., torch.Tensor], tokenizer: Tokenizer, max_length: int,
                 start_id: int, **kwargs):
        super().__init__(forward, tokenizer, max_length, **kwargs)
        self.start_id = start_id

    def _encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        # lm-eval's seq2seq encoding: the context with the tokenizer's specials, the
        # continuation without; an empty context is the prefix token (BOS, else EOS).
        if context == "":
            return [self.tok.prefix_id], self.tok.encode_plain(continuation)
        n_spaces = len(context) - len(context.rstrip())
        if n_spaces:
            context, continuation = context[:-n_spaces], context[-n_spaces:] + continuation
        return self.tok.encode(context), self.tok.encode_plain(continuation)

    def _logits(self, sources: list[list[int]], targets: list[list[int]]) -> torch.Tensor:
        """Decoder logits (B, U, V) for each source, the decoder reading start + target[:-1]."""
        S, U = max(len(s) for s in sources), max(len(t) for t in targets)
        enc = torch.zeros(len(sources), S, dtype=torch.long)
        mask = torch.zeros(len(sources), S, dtype=torch.bool)
        dec = torch.full((len(sources), U), self.start_id, dtype=torch.long)
        for row, (src, tgt) in enumerate(zip(sources, targets)):
            enc[row, :len(src)], mask[row, :len(src)] = torch.tensor(src), True
            dec[row, 1:len(tgt)] = torch.tensor(tgt[:-1], dtype=torch.long)
        return self.forward(enc.to(self.device), mask.to(self.device), dec.to(self.device))

    @torch.no_grad()
    def score_tokens(self, pairs, desc: str = "loglikelihood"):
        # Each side keeps its last max_length tokens (the decoder never needs the source's room).
        pairs = [(ctx[-self.max_length:], cont[-self.max_length:]) for ctx, cont in pairs]
        if any(not cont for _, cont in pairs):
            raise ValueError("empty continuation: nothing to score")
        order = sorted(range(len(pairs)), key=lambda i: (-len(pairs[i][0]) - len(pairs[i][1]), pairs[i]))
        results: list[tuple[float, bool] | None] = [None] * len(pairs)
        bar = tqdm(total=len(pairs), desc=desc, disable=None if self.progress is None else not self.progress, leave=False)
        for start in range(0, len(order), self.batch_size):
            idx = order[start:start + self.batch_size]
            logprobs = F.log_softmax(self._logits([pairs[i][0] for i in idx], [pairs[i][1] for i in idx]).float(), -1)
            for row, i in enumerate(idx):
                cont = torch.tensor(pairs[i][1], device=logprobs.device)
                lp = logprobs[row, :len(cont)]
                results[i] = (float(lp.gather(1, cont[:, None]).sum()), bool((lp.argmax(-1) == cont).all()))
            bar.update(len(idx))
        bar.close()
        return results  # type: ignore[return-value]

    def _context_ids(self, context: str, max_new: int) -> list[int]:
        return self.tok.encode(context)[-self.max_length:]  # the encoder's own window

    def _greedy(self, context: str, until: list[str], max_new: int) -> list[int]:
        return super()._greedy(context, until, min(max_new, self.max_length - 1))  # the decoder's window

    def _next_token(self, ids: list[int], new: list[int]) -> int:
        return int(self._logits([ids], [new + [0]])[0, -1].argmax())
