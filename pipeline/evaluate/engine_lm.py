"""``generate_until`` for our own causal decoders through the inference engine.

``CausalLM`` generates one request at a time with a full forward per new token; here every
request of a task joins one ``pipeline.core.inference.Engine``: batched (continuous batching
up to the evaluator's batch size), keys and values kept in the paged cache, each request
retired at its own stop string, stop token or token limit. The tokens are the same greedy
tokens (tests/evaluate/test_engine_lm.py compares the two paths), so the scores are too.

What the engine cannot do exactly as the one-at-a-time path does stays on that path: a
prefix decoder (its context is a bidirectional prefix there; the engine's prompt is causal)
and a request whose context plus new tokens would not fit the model's context (the old path
slides its window then).
"""
from __future__ import annotations

from pipeline.core.inference import Engine, EngineConfig, SamplingParams
from pipeline.evaluate.lm import CausalLM, logits_fn


class EngineLM(CausalLM):
    """A ``CausalLM`` over our ``Transformer`` whose generation goes through the engine."""

    def __init__(self, model, tokenizer, max_length: int, fuse: bool = False, **kwargs):
        """``fuse``: let the engine merge the model's q/k/v and gate/up weights (inference/fused.py)
        -- for a model loaded only to be evaluated; a caller's model it might train or save is left as is."""
        super().__init__(logits_fn(model), tokenizer, max_length, **kwargs)
        self.model = model
        self.fuse = fuse

    def greedy_all(self, jobs):
        out: list[list[int] | None] = [None] * len(jobs)
        batched = []  # (job index, context ids, params)
        context = self.model.cfg.max_seq_len
        stops = set(self.stop_ids) | ({self.tok.eos_id} if self.tok.eos_id is not None else set())
        for i, (text, until, max_new) in enumerate(jobs):
            ids = self._context_ids(text, max_new)
            if not ids or max_new < 1 or len(ids) + max_new > min(context, self.max_length):
                out[i] = self._greedy(text, until, max_new)
                continue
            # Stop strings the engine would refuse (empty ones) stop nothing on the old path either.
            batched.append((i, ids, SamplingParams(max_tokens=max_new, temperature=0, stop=[s for s in until if s],
                                                   stop_token_ids=sorted(self.stop_ids))))
        if batched:
            engine = self._engine(max(len(ids) + p.max_tokens for _, ids, p in batched))
            done = engine.generate([ids for _, ids, _ in batched], [p for _, _, p in batched])
            for (i, _, _), completion in zip(batched, done):
                new = completion.token_ids
                out[i] = new[:-1] if new and new[-1] in stops else new  # the old path never appends a stop token
        return out

    def _engine(self, longest: int) -> Engine:
        """A fresh engine per call, its block pool sized for batch_size of the longest request
        (the default, batch_size full contexts, can be gigabytes for a model with a long context)."""
        cfg = EngineConfig(max_batch=self.batch_size, device=self.device)
        cfg.kv_cache_tokens = self.batch_size * (-(-(longest + self.model.cfg.virtual_tokens) // cfg.block_size)
                                                 * cfg.block_size)
        return Engine(self.model, self.tok.tok, cfg, eos_id=self.tok.eos_id, fuse=self.fuse)
