"""Examples as token ids with loss masks, and the micro-batches of each optimizer step.

A conversation is rendered with the chat template and tokenized in one go (transformers'
``apply_chat_template``, as TRL); the loss covers the assistant's tokens and its end-of-turn
marker. Inputs are ``ids[:-1]``, targets ``ids[1:]`` with -100 wherever the target is not the
assistant's. A preference pair is its prompt (ending with the assistant's turn opened) and
two completions; a completion is what the chat template adds after that prompt.

Batches are a function of the step (``ExampleOrder``, shuffled per epoch by the seed), so a
resumed run reads what the uninterrupted one would have. Padding pads each micro-batch to its
longest example; packing concatenates whole examples into rows of ``seq_len`` tokens (fewer
pad tokens; examples in a row attend to the ones before them, as TRL's original packing).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
import torch

from pipeline.core import chat
from pipeline.core.train.batches import ShuffledOrder, micro_batch_start

IGNORE = -100


@dataclass
class Encoded:
    ids: list[int]
    mask: list[int]  # 1 where the token is scored (its prediction counts in the loss)


def encode_conversation(tok, messages: list[dict]) -> Encoded:
    ids, mask = chat.encode_chat(tok, messages)
    return Encoded(ids, mask)


def encode_pair(tok, prompt: list[dict], completion: str) -> Encoded:
    """The prompt with the assistant's reply ``completion``; only the reply is scored."""
    prompt_ids = chat.encode_prompt(tok, prompt)
    full, _ = chat.encode_chat(tok, prompt + [{"role": "assistant", "content": completion}])
    if full[:len(prompt_ids)] != prompt_ids:
        raise ValueError("the chat template renders the prompt differently inside a conversation")
    return Encoded(full, [0] * len(prompt_ids) + [1] * (len(full) - len(prompt_ids)))


def fits(enc: Encoded, seq_len: int) -> bool:
    return len(enc.ids) <= seq_len + 1 and any(enc.mask[1:])


def encode_all(tok, examples: list[dict], kind: str, seq_len: int, dropped: Counter) -> list:
    """Encoded examples that fit the context; the others are counted as too_long."""
    out = []
    for ex in examples:
        if kind == "conversation":
            enc = encode_conversation(tok, ex["messages"])
            ok = fits(enc, seq_len)
        else:
            enc = (encode_pair(tok, ex["prompt"], ex["chosen"]), encode_pair(tok, ex["prompt"], ex["rejected"]))
            ok = all(fits(e, seq_len) for e in enc)
        if ok:
            out.append(enc)
        else:
            dropped["too_long"] += 1
    return out


def collate(rows: list[Encoded], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, targets) padded on the right to the longest row; targets -100 off the mask."""
    width = max(len(r.ids) for r in rows) - 1
    x = torch.full((len(rows), width), pad_id, dtype=torch.long)
    y = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    for i, r in enumerate(rows):
        ids, mask = torch.tensor(r.ids), torch.tensor(r.mask, dtype=torch.bool)
        n = len(r.ids) - 1
        x[i, :n] = ids[:-1]
        y[i, :n] = torch.where(mask[1:], ids[1:], IGNORE)
    return x, y


def pack(rows: list[Encoded], seq_len: int, seed: int) -> list[Encoded]:
    """Whole examples, in a seeded order, concatenated into rows of at most seq_len + 1 tokens."""
    order = np.random.default_rng([seed, 7]).permutation(len(rows))
    packed, ids, mask = [], [], []
    for i in order:
        r = rows[i]
        if ids and len(ids) + len(r.ids) > seq_len + 1:
            packed.append(Encoded(ids, mask))
            ids, mask = [], []
        ids, mask = ids + r.ids, mask + r.mask
    if ids:
        packed.append(Encoded(ids, mask))
    return packed


class StepBatches:
    """step -> this rank's micro-batches of rows (any per-row objects), ``tc.batch_size`` each."""

    def __init__(self, rows: list, tc, rank: int, seed: int, collate_fn):
        self.rows, self.tc, self.rank, self.collate = rows, tc, rank, collate_fn
        self.order = ShuffledOrder(len(rows), seed)

    def micro(self, step: int, micro: int):
        first = micro_batch_start(step, micro, self.rank, self.tc)
        return self.collate([self.rows[i] for i in self.order.indices(first, self.tc.batch_size)])

    def __call__(self, step: int):
        return (self.micro(step, m) for m in range(self.tc.grad_accum))


def collate_pairs(pairs: list[tuple[Encoded, Encoded]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Chosen rows then rejected rows, one padded batch (one forward scores both, as TRL)."""
    return collate([p[0] for p in pairs] + [p[1] for p in pairs], pad_id)


def batched(items: list, size: int):
    for i in range(0, len(items), size):
        yield items[i:i + size]
