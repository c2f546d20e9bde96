import math

import numpy as np
import torch
from tokenizers import Tokenizer

from pipeline.core.train import evaluation
from pipeline.core.tokens import TokenData


def test_token_bytes_add_up_to_the_utf8_bytes_of_the_text(token_dir):
    tok = Tokenizer.from_file(str(token_dir / "tokenizer.json"))
    per_token = evaluation.token_bytes(token_dir / "tokenizer.json", 320)
    for text in ["The cat sees the moon.", "naïve café — 東京", "  spaces\n\nand newlines"]:
        ids = tok.encode(text, add_special_tokens=False).ids
        assert per_token[ids].sum() == len(text.encode("utf-8"))
    bos = tok.token_to_id("<|bos|>")
    assert per_token[bos] == 0  # special tokens stand for no text


def test_bits_per_byte_converts_nats_per_byte():
    assert evaluation.bits_per_byte(math.log(2) * 100, 100) == 1.0


def test_unigram_baseline_is_the_smoothed_frequency_model():
    train = np.array([0, 0, 0, 1, 2, 2], dtype=np.uint16)
    val = np.array([0, 1, 2, 0], dtype=np.uint16)
    nats = evaluation.unigram_nats(train, val, np.array([0]), seq_len=3, vocab_size=4, alpha=1.0)
    p = {0: 4 / 10, 1: 2 / 10, 2: 3 / 10}  # (count + 1) / (6 + 4)
    assert nats == -(math.log(p[1]) + math.log(p[2]) + math.log(p[0]))


def test_validation_loss_sums_match_the_model_loss(token_dir):
    from pipeline.model import Config, Transformer

    data = TokenData(token_dir)
    torch.manual_seed(0)
    model = Transformer(Config(vocab_size=320, n_layer=1, d_model=128, n_head=4, n_kv_head=2, d_mlp=128, max_seq_len=32))
    starts = np.array([0, 32, 64])
    import contextlib

    nats, n = evaluation.loss_sums(model, data.val, starts, 32, batch_size=2, autocast=contextlib.nullcontext,
                                   device=torch.device("cpu"))
    x = torch.from_numpy(np.stack([data.val[s:s + 33].astype(np.int64) for s in starts]))
    with torch.no_grad():
        _, loss = model(x[:, :-1], x[:, 1:])
    assert n == 96 and abs(nats / n - float(loss)) < 1e-5
    # a rank's share padded with a repeat counts for nothing: 2 ranks see the same total
    half = [evaluation.loss_sums(model, data.val, starts, 32, 2, contextlib.nullcontext, torch.device("cpu"), r, 2)
            for r in (0, 1)]
    # (without a process group each rank reports only its own share)
    assert sum(h[1] for h in half) == 96 and abs(sum(h[0] for h in half) - nats) < 1e-3
