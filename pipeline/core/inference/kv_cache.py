"""A paged KV cache (vLLM's PagedAttention): one pool of fixed-size blocks shared by every
sequence, a block table per sequence, free-list allocation, and prefix sharing.

A sequence's keys and values live in blocks of ``block_size`` token slots; its block table
lists them in order, so sequences of any length draw from one pool and waste at most one
partly filled block each (no per-sequence max-length reservation, no fragmentation). Token
``t`` of a sequence sits in slot ``table[t // block_size] * block_size + t % block_size``.

Prefix sharing: a block that is full is known by a hash of every token up to its end, so
a second request that starts with the same tokens (a common system prompt) points its table
at the same blocks (reference counted) instead of recomputing them. Only full blocks are
shared, so a sequence only ever writes into a block it owns alone. A block whose last user
finished goes back to the free list but keeps its hash until it is handed out again (least
recently freed first), so a prompt repeated later still finds it, as vLLM's prefix cache does.
"""
from __future__ import annotations

import hashlib
import itertools
from collections import OrderedDict

import numpy as np
import torch


class NoFreeBlocks(RuntimeError):
    """The pool is exhausted: the scheduler preempts a sequence or waits."""


class BlockAllocator:
    """Block ids from a free list, with reference counts and full blocks findable by hash."""

    def __init__(self, num_blocks: int):
        self.num_blocks = num_blocks
        self.refs = [0] * num_blocks
        # Insertion order = order of release: the longest-free (coldest cached) block is reused first.
        self.free: OrderedDict[int, None] = OrderedDict((b, None) for b in range(num_blocks))
        self.by_hash: dict[bytes, int] = {}
        self.hash_of: dict[int, bytes] = {}

    @property
    def num_free(self) -> int:
        return len(self.free)

    def allocate(self) -> int:
        if not self.free:
            raise NoFreeBlocks(f"all {self.num_blocks} KV-cache blocks are in use")
        block, _ = self.free.popitem(last=False)
        stale = self.hash_of.pop(block, None)
        if stale is not None:  # its old contents are about to be overwritten
            del self.by_hash[stale]
        self.refs[block] = 1
        return block

    def share(self, digest: bytes) -> int | None:
        """The block holding exactly these tokens, with one more reference; None if absent."""
        block = self.by_hash.get(digest)
        if block is None:
            return None
        if self.refs[block] == 0:
            del self.free[block]
        self.refs[block] += 1
        return block

    def register(self, block: int, digest: bytes) -> None:
        """A full block's contents are final: later prompts with the same prefix may share it."""
        if digest not in self.by_hash and block not in self.hash_of:
            self.by_hash[digest] = block
            self.hash_of[block] = digest

    def release(self, block: int) -> None:
        if self.refs[block] <= 0:
            raise RuntimeError(f"KV-cache block {block} released more often than taken")
        self.refs[block] -= 1
        if self.refs[block] == 0:
            self.free[block] = None


def block_digest(parent: bytes, tokens) -> bytes:
    """Hash of a full block given the hash of everything before it: equal digests mean equal
    token prefixes, so equal keys and values."""
    return hashlib.sha256(parent + np.asarray(tokens, dtype=np.int64).tobytes()).digest()


_serials = itertools.count()


class BlockTable:
    """The blocks of one sequence and how many of its tokens have keys/values in them."""

    def __init__(self):
        self.blocks: list[int] = []
        self.digests: list[bytes] = []  # of the leading full blocks, once registered
        self.num_tokens = 0
        # Names these contents: renewed when the table is freed, so a decode step can tell that a
        # row continues the same sequence as at the last step (decode_view.py); an id() can be reused.
        self.serial = next(_serials)


class PagedKVCache:
    """Keys and values of every layer as (n_layer, num_blocks, block_size, n_kv_head, head_dim)."""

    def __init__(self, n_layer: int, n_kv_head: int, head_dim: int, num_blocks: int, block_size: int,
                 dtype=torch.float32, device="cpu", prefix_sharing: bool = True):
        shape = (n_layer, num_blocks, block_size, n_kv_head, head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        # Per-layer (slots, n_kv_head, head_dim) views made once: a decode step writes every layer,
        # and slicing and reshaping there again each time is a few more tiny ops per layer.
        self._k_slots = [t.view(-1, n_kv_head, head_dim) for t in self.k]
        self._v_slots = [t.view(-1, n_kv_head, head_dim) for t in self.v]
        self.block_size, self.num_blocks = block_size, num_blocks
        self.allocator = BlockAllocator(num_blocks)
        self.prefix_sharing = prefix_sharing

    @property
    def nbytes(self) -> int:
        return self.k.nbytes + self.v.nbytes

    def bytes_per_token(self) -> float:
        return self.nbytes / (self.num_blocks * self.block_size)

    def blocks_needed(self, table: BlockTable, new_tokens: int) -> int:
        have = len(table.blocks) * self.block_size
        return max(0, -(-(table.num_tokens + new_tokens - have) // self.block_size))

    def can_fit(self, table: BlockTable, new_tokens: int) -> bool:
        return self.blocks_needed(table, new_tokens) <= self.allocator.num_free

    def share_prefix(self, table: BlockTable, tokens: list[int]) -> int:
        """Point an empty table at cached blocks of the longest shared prefix of ``tokens``;
        -> tokens covered. The last token is never covered: its logits must be computed."""
        if not self.prefix_sharing or table.blocks:
            return 0
        parent = b""
        for start in range(0, len(tokens) - 1 - self.block_size + 1, self.block_size):
            digest = block_digest(parent, tokens[start:start + self.block_size])
            block = self.allocator.share(digest)
            if block is None:
                break
            table.blocks.append(block)
            table.digests.append(digest)
            parent = digest
        table.num_tokens = len(table.blocks) * self.block_size
        return table.num_tokens

    def append_slots(self, table: BlockTable, n: int) -> list[int]:
        """Slots for the next ``n`` tokens of the sequence (allocating blocks as needed); a list,
        so that a step makes one tensor of every sequence's slots rather than one per sequence."""
        if not self.can_fit(table, n):
            raise NoFreeBlocks(f"{self.blocks_needed(table, n)} blocks needed, {self.allocator.num_free} free")
        for _ in range(self.blocks_needed(table, n)):
            table.blocks.append(self.allocator.allocate())
        positions = range(table.num_tokens, table.num_tokens + n)
        table.num_tokens += n
        bs = self.block_size
        return [table.blocks[p // bs] * bs + p % bs for p in positions]

    def register_full_blocks(self, table: BlockTable, tokens: list[int]) -> None:
        """Make the table's newly completed blocks shareable (``tokens``: the sequence so far)."""
        if not self.prefix_sharing:
            return
        bs = self.block_size
        while len(table.digests) < table.num_tokens // bs:
            i = len(table.digests)
            digest = block_digest(table.digests[-1] if table.digests else b"", tokens[i * bs:(i + 1) * bs])
            self.allocator.register(table.blocks[i], digest)
            table.digests.append(digest)

    def free(self, table: BlockTable) -> None:
        for block in table.blocks:
            self.allocator.release(block)
        table.blocks, table.digests, table.num_tokens = [], [], 0
        table.serial = next(_serials)

    def write(self, layer: int, slots: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
        """Store keys/values (N, n_kv_head, head_dim) of N tokens at their slots."""
        dtype = self.k.dtype
        self._k_slots[layer].index_copy_(0, slots, k if k.dtype == dtype else k.to(dtype))
        self._v_slots[layer].index_copy_(0, slots, v if v.dtype == dtype else v.to(dtype))

    def gather(self, layer: int, blocks: torch.Tensor, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The first ``length`` keys and values of a sequence, contiguous (length, n_kv_head, head_dim)."""
        _, _, _, h, d = self.k.shape
        return (self.k[layer][blocks].reshape(-1, h, d)[:length],
                self.v[layer][blocks].reshape(-1, h, d)[:length])


def theoretical_bytes_per_token(n_layer: int, n_kv_head: int, head_dim: int, dtype) -> int:
    """Keys and values of one token in every layer: the least any KV cache can store."""
    return 2 * n_layer * n_kv_head * head_dim * torch.empty((), dtype=dtype).element_size()
