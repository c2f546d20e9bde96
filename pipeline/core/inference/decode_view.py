"""A decoding batch's cached keys and values laid out side by side, kept from step to step.

The compiled decode step (compiled.py) attends over one padded (N, L) run of cached keys
and values per row and layer. Gathering those from the block pool every step copies the
whole batch's cache to add one token per row; between two steps of the same batch (same
sequences, same order, each one token longer) the new view is the old one plus a token, so
it is kept and each step writes its new keys and values into it as into the pool. The pool
stays the source of truth: a step that changes the batch, or grows past the view's room,
gathers the view again from the pool (room doubles each time, so that is rare).

Cost: the view holds a second copy of the batch's keys and values (up to twice the longest
row, rounded to blocks) besides the pool, while the batch decodes.
"""
from __future__ import annotations

import torch

from pipeline.core.inference.forward import Batch
from pipeline.core.inference.kv_cache import PagedKVCache


class DecodeView:
    def __init__(self):
        self.k = self.v = None  # (n_layer, N, n_kv_head, room, head_dim)
        self.serials: list[int] = []  # the rows' block tables (BlockTable.serial) at the last step
        self.lens: list[int] = []  # tokens each row had cached then
        self.stats = {"steps": 0, "gathers": 0}

    def reset(self) -> None:
        """The pool gained tokens the view did not see: the next step gathers it again."""
        self.serials = []

    def prepare(self, cache: PagedKVCache, batch: Batch) -> torch.Tensor:
        """Bring the view up to this all-decode step's rows; -> the additive mask (N, 1, 1, L)
        over the L viewed positions: 0 for the tokens each row has cached, -inf past them (this
        step's token is not in the view yet: compiled.decode_layers adds it)."""
        serials = [s.serial for s in batch.segments]
        lens = [s.start for s in batch.segments]
        L = batch.decode_tables.shape[1] * cache.block_size
        carry_on = (self.k is not None and serials == self.serials and L <= self.k.shape[3]
                    and all(a == b + 1 for a, b in zip(lens, self.lens)))
        self.serials, self.lens = serials, lens
        self.stats["steps"] += 1
        if not carry_on:
            self._gather(cache, batch.decode_tables, L)
        cached = torch.tensor(lens, device=cache.k.device)
        self._next = cached  # where append() writes this step's tokens
        past = torch.arange(L, device=cache.k.device)[None, :] >= cached[:, None]
        return torch.zeros(past.shape, dtype=cache.k.dtype, device=past.device).masked_fill_(past, float("-inf"))[:, None, None]

    def _gather(self, cache: PagedKVCache, tables: torch.Tensor, L: int) -> None:
        n_layer, _, _, h, d = cache.k.shape
        N, room = tables.shape[0], 2 * L
        if self.k is None or self.k.shape[1] != N or self.k.shape[3] != room:
            self.k = torch.zeros((n_layer, N, h, room, d), dtype=cache.k.dtype, device=cache.k.device)
            self.v = torch.zeros_like(self.k)
        blocks = tables.to(device=cache.k.device, dtype=torch.long).reshape(-1)
        for pool, view in ((cache.k, self.k), (cache.v, self.v)):  # every layer in one copy
            view[:, :, :, :L] = pool.index_select(1, blocks).view(n_layer, N, L, h, d).transpose(2, 3)
        self.stats["gathers"] += 1

    def append(self, cache: PagedKVCache, slots: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
        """This step's keys and values (n_layer, N, n_kv_head, head_dim) into the pool at ``slots``
        and into the view after each row's cached tokens: one copy each for all layers."""
        n_layer, N, h, d = k.shape
        room = self.k.shape[3]
        rows = torch.arange(N * h, device=k.device).view(N, h) * room
        at = (rows + self._next[:, None]).reshape(-1)
        for pool, view, new in ((cache.k, self.k, k), (cache.v, self.v, v)):
            new = new.to(pool.dtype)
            pool.view(n_layer, -1, h, d).index_copy_(1, slots, new)
            view.view(n_layer, -1, d).index_copy_(1, at, new.reshape(n_layer, N * h, d))
