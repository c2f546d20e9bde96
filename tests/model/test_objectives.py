"""Objectives: the hidden spans come back, lengths are exact, prefixes are uniform, both layouts
score the target only."""
import pytest
import torch

from pipeline.model import Config, Transformer
from pipeline.model.objectives import (corrupt_spans, decoder_batch, noise_mask, raw_length, seq2seq_batch,
                                       span_corruption, span_corruption_batch, span_counts, split_prefix)

SENTINELS = list(range(1000, 1032))


def uncorrupt(idx, targets, prefix_len, sentinels):
    """Rebuild the original window from the input prefix and the target stream."""
    seq = torch.cat([idx, targets[-1:]]).tolist()
    inp, tgt = seq[:prefix_len], seq[prefix_len:]
    spans, current = {}, None
    for t in tgt:
        if t in sentinels:
            current = t
            spans[current] = []
        else:
            spans[current].append(t)
    out = []
    for t in inp:
        out.extend(spans[t] if t in sentinels else [t])
    return out


@pytest.mark.parametrize("n, seed", [(30, 0), (100, 1), (233, 2), (7, 3)])
def test_input_and_target_together_give_back_the_window(n, seed):
    tokens = torch.randint(0, 900, (n,))
    idx, targets, prefix_len = span_corruption(tokens, SENTINELS, generator=torch.Generator().manual_seed(seed))
    num_noise, num_spans = span_counts(n, 0.15, 3.0)
    assert len(idx) == len(targets) == n + 2 * num_spans - 1
    assert prefix_len == n - num_noise + num_spans
    assert uncorrupt(idx, targets, prefix_len, SENTINELS) == tokens.tolist()
    # the loss sees the target stream only: its first token (a sentinel) onwards
    assert (targets[: prefix_len - 1] == -100).all() and (targets[prefix_len - 1:] != -100).all()
    assert targets[prefix_len - 1] == SENTINELS[0]
    assert torch.equal(idx[1:], torch.where(targets[:-1] == -100, idx[1:], targets[:-1]))


def test_noise_mask_density_and_spans_follow_t5():
    mask = noise_mask(1000, 0.15, 3.0, torch.Generator().manual_seed(0))
    assert int(mask.sum()) == 150
    starts = mask & ~torch.cat([torch.tensor([False]), mask[:-1]])
    assert int(starts.sum()) == 50 and not mask[0]


def test_the_same_generator_seed_gives_the_same_corruption():
    tokens = torch.arange(200)
    a = span_corruption(tokens, SENTINELS, generator=torch.Generator().manual_seed(5))
    b = span_corruption(tokens, SENTINELS, generator=torch.Generator().manual_seed(5))
    c = span_corruption(tokens, SENTINELS, generator=torch.Generator().manual_seed(6))
    assert all(torch.equal(x, y) for x, y in zip(a[:2], b[:2])) and not torch.equal(a[0], c[0])


def test_raw_length_fills_the_sequence_exactly():
    for seq_len in (64, 256, 1024):
        n = raw_length(seq_len)
        assert n + 2 * span_counts(n, 0.15, 3.0)[1] - 1 == seq_len
        idx, targets, prefix = span_corruption_batch(torch.randint(0, 900, (3, n)), SENTINELS * 4)
        assert idx.shape == targets.shape == (3, seq_len) and isinstance(prefix, int)


def test_too_few_sentinels_names_the_setting():
    with pytest.raises(ValueError, match="raise tokenize.n_sentinels"):
        span_corruption(torch.arange(300), SENTINELS[:4])


def test_a_prefix_model_trains_on_corrupted_batches():
    torch.manual_seed(0)
    model = Transformer(Config(vocab_size=1100, n_layer=1, n_head=2, n_kv_head=1, d_model=32, d_mlp=64,
                               max_seq_len=64, attention="prefix"))
    n = raw_length(64)
    idx, targets, prefix = span_corruption_batch(torch.randint(0, 900, (2, n)), SENTINELS)
    _, loss = model(idx, targets, prefix_len=prefix)
    loss.backward()
    assert torch.isfinite(loss) and model.embed.weight.grad.abs().sum() > 0


def test_prefix_split_is_uniform_over_the_window_and_keeps_every_token():
    tokens = torch.arange(10)
    g = torch.Generator().manual_seed(0)
    lengths = []
    for _ in range(900):
        prefix, rest = split_prefix(tokens, g)
        assert torch.equal(torch.cat([prefix, rest]), tokens) and len(prefix) >= 1 and len(rest) >= 1
        lengths.append(len(prefix))
    counts = torch.bincount(torch.tensor(lengths), minlength=10)[1:]
    assert counts.min() > 60 and counts.max() < 140  # 9 lengths, 100 each expected


def test_decoder_batch_scores_the_targets_only_and_pads_on_the_right():
    pairs = [(torch.tensor([1, 2, 3]), torch.tensor([4, 5])), (torch.tensor([6]), torch.tensor([7, 8, 9]))]
    b = decoder_batch(pairs, seq_len=6, pad_id=0)
    assert b["idx"].tolist() == [[1, 2, 3, 4, 0, 0], [6, 7, 8, 0, 0, 0]]
    assert b["targets"].tolist() == [[-100, -100, 4, 5, -100, -100], [7, 8, 9, -100, -100, -100]]
    assert b["prefix_len"].tolist() == [3, 1]
    with pytest.raises(ValueError, match="does not fit seq_len 3"):
        decoder_batch(pairs, seq_len=3, pad_id=0)


def test_seq2seq_batch_shifts_the_target_behind_the_start_token():
    pairs = [(torch.tensor([1, 2, 3]), torch.tensor([4, 5])), (torch.tensor([6]), torch.tensor([7, 8, 9]))]
    b = seq2seq_batch(pairs, pad_id=0)
    assert b["enc"].tolist() == [[1, 2, 3], [6, 0, 0]]
    assert b["enc_mask"].tolist() == [[True, True, True], [True, False, False]]
    assert b["dec"].tolist() == [[0, 4, 0], [0, 7, 8]]
    assert b["targets"].tolist() == [[4, 5, -100], [7, 8, 9]]


def test_both_layouts_of_a_corrupted_window_carry_the_same_target():
    tokens = torch.randint(0, 900, (80,))
    source, target = corrupt_spans(tokens, SENTINELS, generator=torch.Generator().manual_seed(3))
    dec = decoder_batch([(source, target)], seq_len=len(source) + len(target) - 1, pad_id=0)
    s2s = seq2seq_batch([(source, target)], pad_id=0)
    assert dec["targets"][0][dec["targets"][0] != -100].tolist() == s2s["targets"][0].tolist() == target.tolist()
    assert uncorrupt(dec["idx"][0], dec["targets"][0], len(source), SENTINELS) == tokens.tolist()
