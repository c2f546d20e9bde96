"""Sampling against transformers' logits warpers; the block allocator's bookkeeping."""
import pytest
import torch

from pipeline.core.inference.kv_cache import BlockAllocator, BlockTable, NoFreeBlocks, PagedKVCache, \
    theoretical_bytes_per_token
from pipeline.core.inference.sampling import SamplingParams, filter_logits, sample


@pytest.mark.parametrize("temperature, top_k, top_p", [(1.0, 0, 1.0), (0.7, 5, 1.0), (1.3, 0, 0.8),
                                                       (0.9, 20, 0.5), (1.0, 1, 1.0), (2.0, 0, 0.01)])
def test_filtering_equals_transformers_warpers(temperature, top_k, top_p):
    from transformers.generation.logits_process import (LogitsProcessorList, TemperatureLogitsWarper,
                                                        TopKLogitsWarper, TopPLogitsWarper)

    logits = torch.randn(4, 300, generator=torch.Generator().manual_seed(0)) * 3
    warpers = LogitsProcessorList([TemperatureLogitsWarper(temperature)])
    if top_k:
        warpers.append(TopKLogitsWarper(top_k))
    if top_p < 1:
        warpers.append(TopPLogitsWarper(top_p))
    expected = warpers(torch.zeros(4, 1, dtype=torch.long), logits.clone())
    torch.testing.assert_close(filter_logits(logits, temperature, top_k, top_p), expected)


def test_sampled_frequencies_follow_the_filtered_distribution():
    logits = torch.tensor([[2.0, 1.0, 0.5, 0.0, -1.0, -3.0]])
    p = SamplingParams(temperature=0.8, top_k=4, seed=0)
    gen = p.generator("cpu")
    draws = torch.tensor([sample(logits, [p], [gen])[0] for _ in range(4000)])
    freq = torch.bincount(draws, minlength=6).float() / len(draws)
    expected = filter_logits(logits, 0.8, 4, 1.0).softmax(-1)[0]
    assert freq[4:].sum() == 0  # outside the top 4: never drawn
    torch.testing.assert_close(freq, expected, atol=0.03, rtol=0)


def test_greedy_rows_take_the_argmax_and_seeds_repeat():
    logits = torch.randn(3, 50, generator=torch.Generator().manual_seed(1))
    greedy = SamplingParams(temperature=0)
    assert sample(logits, [greedy] * 3, [None] * 3) == logits.argmax(-1).tolist()
    tiny = SamplingParams(temperature=1e-9)  # logits / 1e-9 would overflow: treated as greedy
    assert sample(logits * 1e32, [tiny] * 3, [None] * 3) == logits.argmax(-1).tolist()
    p = SamplingParams(temperature=1.0, seed=5)
    a = [sample(logits[:1], [p], [g])[0] for g in [p.generator("cpu")] * 10]
    b = [sample(logits[:1], [p], [g])[0] for g in [p.generator("cpu")] * 10]
    assert a == b


def test_allocator_hands_out_every_block_once_and_takes_them_back():
    alloc = BlockAllocator(4)
    blocks = [alloc.allocate() for _ in range(4)]
    assert sorted(blocks) == [0, 1, 2, 3] and alloc.num_free == 0
    with pytest.raises(NoFreeBlocks):
        alloc.allocate()
    alloc.register(blocks[0], b"h")
    assert alloc.share(b"h") == blocks[0] and alloc.refs[blocks[0]] == 2
    alloc.release(blocks[0])
    alloc.release(blocks[0])
    assert alloc.num_free == 1
    assert alloc.share(b"h") == blocks[0] and alloc.num_free == 0  # revived from the free list
    alloc.release(blocks[0])
    for b in blocks[1:]:
        alloc.release(b)
    assert alloc.allocate() == blocks[0]  # least recently freed first
    assert alloc.share(b"h") is None  # reusing the block dropped its cached contents
    with pytest.raises(RuntimeError, match="released more often"):
        alloc.release(blocks[1])


def test_slots_follow_the_block_table_and_only_full_blocks_are_shared():
    cache = PagedKVCache(n_layer=1, n_kv_head=1, head_dim=2, num_blocks=8, block_size=4)
    a = BlockTable()
    slots = cache.append_slots(a, 6)
    assert len(a.blocks) == 2
    assert slots == [a.blocks[0] * 4 + i for i in range(4)] + [a.blocks[1] * 4 + i for i in range(2)]
    tokens = list(range(10, 16))
    cache.register_full_blocks(a, tokens)
    assert len(a.digests) == 1  # the half-filled second block is not shareable
    b = BlockTable()
    assert cache.share_prefix(b, tokens + [99, 98]) == 4 and b.blocks == a.blocks[:1]
    c = BlockTable()
    assert cache.share_prefix(c, tokens[:4]) == 0  # the last token must be computed: nothing shared
    assert cache.share_prefix(BlockTable(), [1] + tokens[1:] + [7]) == 0  # a different first token
    cache.free(a), cache.free(b)
    assert cache.allocator.num_free == 8


def test_bytes_per_token_of_the_pool_equals_the_minimum():
    cache = PagedKVCache(n_layer=6, n_kv_head=2, head_dim=32, num_blocks=10, block_size=16, dtype=torch.float16)
    assert cache.bytes_per_token() == theoretical_bytes_per_token(6, 2, 32, torch.float16) == 2 * 6 * 2 * 32 * 2
