"""Paged decode attention: the Triton kernel (interpreted on CPU) against the reference, and
the reference against attention computed sequence by sequence on contiguous keys."""
import pytest
import torch

import kernels
from kernels import reference
from tests.kernels.kernel_checks import ATTN_TOL, DEVICE, DTYPES


def paged_case(lengths, Hq, Hkv, D, block_size, dtype, seed=0, spare_blocks=3):
    """Random K/V for sequences of ``lengths`` scattered over a shuffled block pool."""
    g = torch.Generator().manual_seed(seed)
    per_seq = [-(-n // block_size) for n in lengths]
    num_blocks = sum(per_seq) + spare_blocks
    order = torch.randperm(num_blocks, generator=g).tolist()  # blocks of a sequence are not adjacent
    width = max(per_seq)
    tables = torch.zeros(len(lengths), width, dtype=torch.int32)
    keys, values, at = [], [], 0
    k_cache = torch.randn(num_blocks, block_size, Hkv, D, generator=g)
    v_cache = torch.randn(num_blocks, block_size, Hkv, D, generator=g)
    for i, (n, b) in enumerate(zip(lengths, per_seq)):
        tables[i, :b] = torch.tensor(order[at:at + b])
        at += b
        keys.append(k_cache[tables[i, :b].long()].reshape(-1, Hkv, D)[:n])
        values.append(v_cache[tables[i, :b].long()].reshape(-1, Hkv, D)[:n])
    q = torch.randn(len(lengths), Hq, D, generator=g)
    cast = lambda t: t.to(DEVICE, dtype)
    return (cast(q), cast(k_cache), cast(v_cache), tables.to(DEVICE),
            torch.tensor(lengths, dtype=torch.int32, device=DEVICE)), keys, values


def test_reference_matches_attention_on_contiguous_keys():
    lengths = [1, 5, 16, 17, 40]
    (q, kc, vc, tables, lens), keys, values = paged_case(lengths, Hq=6, Hkv=2, D=8, block_size=4,
                                                         dtype=torch.float64)
    out = reference.paged_attention(q, kc, vc, tables, lens)
    for i, (k, v) in enumerate(zip(keys, values)):
        # the last query of a causal attention over the sequence sees every key: same thing
        k = k.transpose(0, 1).repeat_interleave(3, 0)  # (Hq, n, D)
        v = v.transpose(0, 1).repeat_interleave(3, 0)
        scores = (q[i][:, None, :] * k).sum(-1) / 8 ** 0.5
        expected = (scores.softmax(-1)[..., None] * v).sum(1)
        torch.testing.assert_close(out[i], expected)


def test_padding_entries_of_the_table_are_never_read():
    (q, kc, vc, tables, lens), _, _ = paged_case([3, 20], Hq=4, Hkv=4, D=16, block_size=16,
                                                 dtype=torch.float32)
    before = reference.paged_attention(q, kc, vc, tables, lens)
    tables = tables.clone()
    tables[0, 1] = tables[1, 0]  # sequence 0 has one block: its second entry is padding
    torch.testing.assert_close(reference.paged_attention(q, kc, vc, tables, lens), before, atol=0, rtol=0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("lengths, Hq, Hkv, D, block_size", [
    ([1], 4, 2, 32, 16),                            # a single token, the cpu_2m model's heads
    ([1, 2, 15, 16, 17, 33, 64, 100], 8, 2, 64, 16),  # lengths around block boundaries, GQA 4
    ([7, 31, 90], 8, 8, 16, 32),                     # multi-head (group 1), block 32
    ([5, 48], 16, 1, 128, 16),                       # multi-query: a group of 16 fills the tile
    ([3, 70], 12, 4, 32, 64),                        # group 3: padded to the 16-row tile
], ids=["one-token", "boundaries-gqa4", "mha-block32", "mqa-d128", "group3-block64"])
def test_triton_kernel_matches_reference(lengths, Hq, Hkv, D, block_size, dtype):
    from kernels.paged_attention import paged_attention

    args, _, _ = paged_case(lengths, Hq, Hkv, D, block_size, dtype)
    out = paged_attention(*args)
    expected = reference.paged_attention(*args)
    assert out.shape == expected.shape and out.dtype == dtype
    torch.testing.assert_close(out.float(), expected.float(), **ATTN_TOL[dtype])


def test_scale_is_honoured_and_dispatch_picks_the_backend():
    args, _, _ = paged_case([9, 21], 4, 2, 32, 16, torch.float32)
    kernels.set_backend("triton")
    triton_out = kernels.paged_attention(*args, scale=0.3)
    kernels.set_backend("torch")
    torch_out = kernels.paged_attention(*args, scale=0.3)
    torch.testing.assert_close(triton_out, torch_out, **ATTN_TOL[torch.float32])
    assert not torch.allclose(torch_out, kernels.paged_attention(*args), atol=1e-3)


def test_triton_kernel_rejects_block_sizes_it_cannot_tile():
    from kernels.paged_attention import paged_attention

    args, _, _ = paged_case([5], 4, 2, 32, 8, torch.float32)
    with pytest.raises(ValueError, match="block size 8"):
        paged_attention(*args)
