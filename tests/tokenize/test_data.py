"""TokenData (the memmap reader pretrain and evaluate use), and the stage run from the CLI."""
import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from pipeline.core.tokens import TokenData


SMALL = {"vocab_size": 350, "n_sentinels": 2, "val_fraction": 0.2, "workers": 1}


@pytest.fixture(scope="module")
def tokenized(tmp_path_factory):
    from pipeline.stage import execute
    from pipeline.tokenize import Config
    from tests.tokenize.synthetic import make_corpus

    root = tmp_path_factory.mktemp("tok")
    make_corpus(root / "collect", n_docs=40)
    execute("tokenize", dataclasses.asdict(Config(**SMALL)), {"docs": root / "collect"}, root / "tok")
    return root / "tok"


@pytest.mark.slow
def test_the_stage_runs_from_the_command_line(tokenized, tmp_path):
    """python -m pipeline tokenize in=... out=...: same files as the in-process run."""
    out = tmp_path / "cli"
    cmd = [sys.executable, "-m", "pipeline", "tokenize", f"in={tokenized.parent / 'collect'}", f"out={out}",
           *(f"{k}={v}" for k, v in SMALL.items())]
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "tokenize: wrote" in done.stdout
    for name in ("train.bin", "val.bin", "tokenizer.json"):
        assert (out / name).read_bytes() == (tokenized / name).read_bytes(), name


def test_reader_exposes_the_stage_files(tokenized):
    data = TokenData(tokenized)
    meta = json.loads((tokenized / "meta.json").read_text())
    assert data.vocab_size == 350 == meta["vocab_size"]
    assert len(data.train) == meta["train_tokens"] and len(data.val) == meta["val_tokens"]
    assert data.train.dtype == np.uint16
    docs = list(data.documents("val"))
    assert len(docs) == meta["val_docs"] and sum(map(len, docs)) == meta["val_tokens"]
    assert all(d[0] == meta["special_tokens"]["bos"] and d[-1] == meta["special_tokens"]["eos"] for d in docs)


def test_get_batch_is_shifted_by_one_and_reproducible(tokenized):
    data = TokenData(tokenized)
    x, y = data.get_batch("train", 4, 16, generator=torch.Generator().manual_seed(3))
    assert x.shape == y.shape == (4, 16) and x.dtype == torch.int64
    assert torch.equal(x[:, 1:], y[:, :-1])
    x2, _ = data.get_batch("train", 4, 16, generator=torch.Generator().manual_seed(3))
    assert torch.equal(x, x2)
    # each row is a real window of the token stream
    train = torch.from_numpy(data.train.astype(np.int64))
    row = x[0].tolist()
    starts = [i for i in range(len(train) - 16) if train[i:i + 16].tolist() == row]
    assert starts


def test_eval_batches_cover_the_split_once_in_order(tokenized):
    data = TokenData(tokenized)
    xs, ys = zip(*data.eval_batches("val", batch_size=3, seq_len=8))
    x, y = torch.cat(xs), torch.cat(ys)
    n = (len(data.val) - 1) // 8
    assert x.shape == (n, 8)
    flat = torch.from_numpy(data.val.astype(np.int64))
    assert torch.equal(x.reshape(-1), flat[: n * 8]) and torch.equal(y.reshape(-1), flat[1: n * 8 + 1])
    assert len(list(data.eval_batches("val", 3, 8, max_batches=1))) == 1


def test_asking_for_windows_longer_than_the_split_is_an_error(tokenized):
    data = TokenData(tokenized)
    with pytest.raises(ValueError, match="fewer than seq_len"):
        data.get_batch("val", 1, len(data.val) + 5)
    with pytest.raises(ValueError, match="split must be"):
        data.tokens("test")


def test_a_directory_that_is_not_a_tokenize_output_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="tokenize stage directory"):
        TokenData(tmp_path)


def test_the_tokenizer_loads_in_transformers(tokenized):
    from transformers import PreTrainedTokenizerFast

    meta = json.loads((tokenized / "meta.json").read_text())
    tok = PreTrainedTokenizerFast(tokenizer_file=str(tokenized / "tokenizer.json"))
    data = TokenData(tokenized)
    first = next(data.documents("val")).tolist()
    text = tok.decode(first[1:-1])
    # transformers encodes the way the stage did: the post-processor prepends bos
    assert tok(text).input_ids == first[:-1]
    assert tok.convert_tokens_to_ids("<|endoftext|>") == meta["special_tokens"]["eos"]
