"""The generation engine: continuous batching over a paged KV cache.

    engine = Engine.from_dir("results/pretrain/<key>")
    [c.text for c in engine.generate(["Once upon a time"], SamplingParams(max_tokens=32, temperature=0))]
    for delta in engine.stream("The history of", SamplingParams(max_tokens=32)):
        print(delta.text, end="", flush=True)

Requests join and leave between steps (Orca's iteration-level scheduling, vLLM's continuous
batching): each ``step`` admits waiting requests while the block pool and ``max_batch``
allow, runs one forward over the new prompts and every running sequence's next token, and
retires the sequences that finished, freeing their blocks for the next step. When a running
sequence needs a block and the pool is empty, the latest-admitted sequence is preempted: its
blocks are freed and it waits again, to be recomputed from its prompt and the tokens it had
(vLLM's recompute preemption); its seeded generator carries on, so its output is unchanged.
"""
from __future__ import annotations

import itertools
import json
import logging
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import torch

from pipeline.core.inference.forward import Batch, forward
from pipeline.core.inference.fused import fuse_projections
from pipeline.core.inference.kv_cache import BlockTable, PagedKVCache
from pipeline.core.inference.sampling import SamplingParams, sample

log = logging.getLogger("lmdag.inference")


@dataclass
class EngineConfig:
    block_size: int = 16  # tokens per KV-cache block (vLLM's default; the Triton kernel needs >= 16)
    # Pool size in tokens; 0 = max_batch full contexts, so nothing is ever preempted.
    kv_cache_tokens: int = 0
    max_batch: int = 32  # sequences decoded together
    max_prefill_tokens: int = 4096  # prompt tokens admitted per step: bounds one step's latency
    prefix_sharing: bool = True
    device: str = "cpu"
    # Device memory for the model's weights in MiB (0 = all on the device); blocks that do not
    # fit stay on the host and are moved in just before use (offload.py).
    device_budget_mb: float = 0.0
    # Decode steps through torch.compile (compiled.py): CPU only; the first steps of each new
    # shape class compile (tens of seconds), then a step costs less than the eager one.
    compile: bool = False

    def __post_init__(self):
        for name in ("block_size", "max_batch", "max_prefill_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.kv_cache_tokens < 0 or self.device_budget_mb < 0:
            raise ValueError("kv_cache_tokens and device_budget_mb must be >= 0")


@dataclass
class Completion:
    request_id: str
    text: str
    token_ids: list[int]
    finish_reason: str  # stop | length
    prompt_tokens: int


@dataclass
class Delta:
    """What one step added to a request: new text (held back while it could still become a
    stop string or ends inside a UTF-8 character) and new tokens."""

    request_id: str
    text: str
    token_ids: list[int]
    finished: bool = False
    finish_reason: str | None = None


@dataclass
class Sequence:
    request_id: str
    prompt_ids: list[int]
    params: SamplingParams
    generator: torch.Generator
    stop_ids: set[int]
    max_total: int  # prompt + output tokens allowed (the context length)
    output_ids: list[int] = field(default_factory=list)
    table: BlockTable = field(default_factory=BlockTable)
    text: str = ""
    sent: int = 0  # characters of text already handed out
    finish_reason: str | None = None
    # False (generate): text is decoded once, at the end, unless stop strings need it each
    # step; decoding the growing output every step is quadratic work nobody reads.
    text_each_step: bool = True

    @property
    def ids(self) -> list[int]:
        return self.prompt_ids + self.output_ids

    @property
    def num_tokens(self) -> int:
        return len(self.prompt_ids) + len(self.output_ids)

    def tokens_from(self, start: int) -> list[int]:
        """ids[start:] without building ids (a decoding sequence needs only its last token)."""
        if start >= len(self.prompt_ids):
            return self.output_ids[start - len(self.prompt_ids):]
        return self.ids[start:]


class Engine:
    def __init__(self, model, tokenizer, cfg: EngineConfig | None = None, eos_id: int | None = None,
                 offloader=None, kv_heads: int | None = None, fuse: bool = False):
        """``kv_heads``: key/value heads this process holds (fewer under tensor parallelism).
        ``fuse``: merge q/k/v and gate/up into one matmul each (fused.py), which turns the
        model's weights into views of the merged ones; ``from_dir`` does it on the model it
        loads, a caller's own model (one it goes on training or saving) is left as it is."""
        self.cfg = cfg or EngineConfig()
        # The model runs on cfg.device; with an offloader it has placed the model already.
        self.model = (model if offloader is not None else model.to(self.cfg.device)).eval()
        self.tokenizer = tokenizer
        self.eos_id = eos_id
        self.offloader = offloader
        mc = model.cfg
        self.context = mc.max_seq_len
        # A model's virtual tokens (prompt/prefix tuning) open every sequence: placeholder ids
        # that forward() replaces with the learned ones, cached (and shared) like a prompt.
        self.virtual_ids = [0] * mc.virtual_tokens
        self.device = self.model.embed.weight.device
        tokens = self.cfg.kv_cache_tokens or self.cfg.max_batch * (self.context + mc.virtual_tokens)
        self.cache = PagedKVCache(mc.n_layer, kv_heads or mc.n_kv_head, mc.head_dim, -(-tokens // self.cfg.block_size),
                                  self.cfg.block_size, self.model.embed.weight.dtype, self.device, self.cfg.prefix_sharing)
        # From the model directory: bos/eos/pad strings for chat templates, and the chat role
        # markers, which end an assistant's turn when it starts another.
        self.special_token_strings: dict[str, str] = {}
        self.chat_stop_ids: list[int] = []
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self._ids = itertools.count()
        # q/k/v and gate/up as one matmul each (fused.py); streamed blocks keep their layers.
        self.fused = fuse_projections(self.model) if fuse and offloader is None else None
        self.compiled = None
        if self.cfg.compile:
            if offloader is not None:
                raise ValueError("compile=true and device_budget_mb (layers streamed in) cannot be combined")
            from pipeline.core.inference.compiled import CompiledDecode

            self.compiled = CompiledDecode(self.model)
        self.stats = {"steps": 0, "preempted": 0, "aborted": 0, "peak_running": 0, "prefix_tokens_shared": 0,
                      "prompt_tokens_computed": 0}

    @classmethod
    def from_dir(cls, path, cfg: EngineConfig | None = None, kernels: str | None = None) -> "Engine":
        """An engine on a model directory (pipeline/model/io.py): weights, tokenizer, EOS id."""
        from tokenizers import Tokenizer

        from pipeline.model.io import TOKENIZER, TOKENIZER_META, load_model, special_token_ids

        cfg = cfg or EngineConfig()
        offload = cfg.device_budget_mb > 0
        model = load_model(path, device="cpu" if offload else cfg.device, kernels=kernels)
        offloader = None
        if offload:
            from pipeline.core.inference.offload import LayerOffloader

            offloader = LayerOffloader(model, cfg.device, int(cfg.device_budget_mb * 2**20))
        tokenizer = Tokenizer.from_file(str(Path(path) / TOKENIZER))
        special = special_token_ids(path)
        engine = cls(model, tokenizer, cfg, special.get("eos"), offloader, fuse=True)
        engine.chat_stop_ids = sorted(set((special.get("chat") or {}).values()) | {special.get("eos")} - {None})
        meta = Path(path) / TOKENIZER_META
        if meta.is_file():
            engine.special_token_strings = json.loads(meta.read_text()).get("special_token_strings", {})
        return engine

    # -- requests ---------------------------------------------------------------------------

    def encode(self, prompt: str, special: bool = True) -> list[int]:
        """Token ids of a prompt; ``special`` adds BOS as in training (off for rendered chats,
        whose template writes its own markers)."""
        return self.tokenizer.encode(prompt, add_special_tokens=special).ids

    def add_request(self, prompt: str | list[int], params: SamplingParams, request_id: str | None = None) -> str:
        ids = self.encode(prompt) if isinstance(prompt, str) else [int(t) for t in prompt]
        if not ids or (isinstance(prompt, str) and not prompt):
            raise ValueError("the prompt is empty")
        vocab = self.model.cfg.vocab_size
        if any(not 0 <= t < vocab for t in ids):  # would fail the whole batch's step, not just this one
            raise ValueError(f"prompt token ids must be in [0, {vocab})")
        if len(ids) >= self.context:
            raise ValueError(f"the prompt has {len(ids)} tokens; the model's context is {self.context} tokens "
                             "(prompt + at least one new token must fit)")
        if -(-(len(self.virtual_ids) + len(ids) + 1) // self.cfg.block_size) > self.cache.num_blocks:
            raise ValueError(f"the prompt needs more KV-cache blocks than the pool has ({self.cache.num_blocks})")
        stop_ids = set(params.stop_token_ids)
        if self.eos_id is not None and not params.ignore_eos:
            stop_ids.add(self.eos_id)
        rid = request_id or f"req-{next(self._ids)}"
        self.waiting.append(Sequence(rid, self.virtual_ids + ids, params, params.generator(self.device), stop_ids,
                                     len(self.virtual_ids) + min(self.context, len(ids) + params.max_tokens)))
        return rid

    def abort(self, request_id: str) -> None:
        for seq in [s for s in self.running if s.request_id == request_id]:
            self.running.remove(seq)
            self.cache.free(seq.table)
            self.stats["aborted"] += 1
        kept = deque(s for s in self.waiting if s.request_id != request_id)
        self.stats["aborted"] += len(self.waiting) - len(kept)
        self.waiting = kept

    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    # -- scheduling -------------------------------------------------------------------------

    def _make_room_for_decodes(self) -> list[Delta]:
        """Every running sequence needs a slot for its next token: preempt from the back. A
        sequence left alone that still does not fit has the whole pool: it ends (length)."""
        ended = []
        while self.running:
            need = sum(self.cache.blocks_needed(s.table, 1) for s in self.running)
            if need <= self.cache.allocator.num_free:
                break
            victim = self.running.pop()
            self.cache.free(victim.table)
            if not self.running and not self.cache.can_fit(BlockTable(), len(victim.ids) + 1):
                log.warning("%s: the KV-cache pool (%d tokens) is full with it alone; ending it there",
                            victim.request_id, self.cache.num_blocks * self.cache.block_size)
                victim.finish_reason = "length"
                ended.append(Delta(victim.request_id, victim.text[victim.sent:], [], True, "length"))
                break
            self.waiting.appendleft(victim)
            self.stats["preempted"] += 1
            log.info("KV cache full: preempted %s (recomputed later)", victim.request_id)
        return ended

    def _admit(self) -> list[Sequence]:
        """Waiting sequences that fit (first come, first served), their cached prefixes shared."""
        admitted, budget = [], self.cfg.max_prefill_tokens
        if not self.waiting:  # the usual decode step: nothing to admit
            return admitted
        reserve = sum(self.cache.blocks_needed(s.table, 1) for s in self.running)
        while self.waiting and len(self.running) + len(admitted) < self.cfg.max_batch:
            seq = self.waiting[0]
            shared = self.cache.share_prefix(seq.table, seq.ids)
            todo = len(seq.ids) - shared
            fits = self.cache.blocks_needed(seq.table, todo) + reserve <= self.cache.allocator.num_free
            if not fits or (admitted and todo > budget):
                self.cache.free(seq.table)  # give the shared blocks back; try again next step
                break
            self.waiting.popleft()
            admitted.append(seq)
            budget -= todo
            self.stats["prefix_tokens_shared"] += shared
            self.stats["prompt_tokens_computed"] += todo
        return admitted

    def step(self) -> list[Delta]:
        """Admit, run one forward for every scheduled sequence, sample, retire: -> deltas."""
        ended = self._make_room_for_decodes()
        admitted = self._admit()
        scheduled = self.running + admitted
        if not scheduled:
            return ended
        segments = []
        for seq in scheduled:
            start = seq.table.num_tokens
            todo = seq.tokens_from(start)
            slots = self.cache.append_slots(seq.table, len(todo))
            segments.append((todo, start, seq.table.blocks, slots, seq.table.serial))
        batch = Batch.build(segments, self.device)
        logits = None
        if self.compiled is not None and self.compiled.applies(batch):
            logits = self.compiled(self.cache, batch)  # None: compiling failed, decode eagerly
        if logits is None:
            logits = forward(self.model, self.cache, batch, self.offloader, self.fused)
        picks = sample(logits, [s.params for s in scheduled], [s.generator for s in scheduled])
        self.stats["steps"] += 1
        self.stats["peak_running"] = max(self.stats["peak_running"], len(scheduled))
        self.running = []
        deltas = ended
        for seq, token in zip(scheduled, picks):
            if seq.table.num_tokens // self.cache.block_size > len(seq.table.digests):  # a block just filled up
                self.cache.register_full_blocks(seq.table, seq.ids)
            deltas.append(self._advance(seq, token))
            if seq.finish_reason is None:
                self.running.append(seq)
            else:
                self.cache.free(seq.table)
        return deltas

    # -- output -----------------------------------------------------------------------------

    def _advance(self, seq: Sequence, token: int) -> Delta:
        """Append a sampled token, detokenize, apply stop conditions; -> what is new."""
        seq.output_ids.append(token)
        if token in seq.stop_ids:
            seq.finish_reason = "stop"
        elif seq.num_tokens >= seq.max_total:
            seq.finish_reason = "length"
        if not (seq.text_each_step or seq.params.stop or seq.finish_reason):
            return Delta(seq.request_id, "", [token])
        text = self.tokenizer.decode([t for t in seq.output_ids if t not in seq.stop_ids], skip_special_tokens=True)
        cut = min((i for i in (text.find(s) for s in seq.params.stop) if i >= 0), default=-1)
        if cut >= 0:
            text, seq.finish_reason = text[:cut], "stop"
        seq.text = text
        done = seq.finish_reason is not None
        ready = len(text)
        if not done:  # hold back a partial UTF-8 character and what may be a stop string's start
            if text.endswith("\ufffd"):
                ready = len(text.rstrip("\ufffd"))
            hold = max((len(s) - 1 for s in seq.params.stop), default=0)
            ready = max(seq.sent, min(ready, len(text) - hold))
        delta = Delta(seq.request_id, text[seq.sent:ready], [token], done, seq.finish_reason)
        seq.sent = ready
        return delta

    def generate(self, prompts: list[str | list[int]], params: SamplingParams | list[SamplingParams]) -> list[Completion]:
        """Complete every prompt, all batched together; results in prompt order."""
        params = params if isinstance(params, list) else [params] * len(prompts)
        seqs = {}
        for prompt, p in zip(prompts, params):
            rid = self.add_request(prompt, p)
            seqs[rid] = self.waiting[-1]
            seqs[rid].text_each_step = False  # only the final text is returned
        while any(s.finish_reason is None for s in seqs.values()):
            self.step()
        return [Completion(rid, s.text, s.output_ids, s.finish_reason, len(s.prompt_ids) - len(self.virtual_ids))
                for rid, s in seqs.items()]

    def stream(self, prompt: str | list[int], params: SamplingParams) -> Iterator[Delta]:
        """Deltas of one request as they are made (other queued requests advance alongside)."""
        rid = self.add_request(prompt, params)
        while True:
            for delta in self.step():
                if delta.request_id == rid:
                    yield delta
                    if delta.finished:
                        return
