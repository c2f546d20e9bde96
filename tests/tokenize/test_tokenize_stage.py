"""The tokenize stage end to end on a tiny corpus: files, split, round trip, accounting, errors."""
import dataclasses
import json

import numpy as np
import pytest
from tokenizers import Tokenizer

from pipeline.core.errors import StageError

from pipeline.stage import execute
from pipeline.tokenize import Config, encode
from tests.tokenize.synthetic import make_corpus

SMALL = {"vocab_size": 400, "n_sentinels": 4, "val_fraction": 0.1, "workers": 1}


def run_stage(inputs_dir, out, **overrides):
    subtree = dataclasses.asdict(Config(**{**SMALL, **overrides}))
    stats = execute("tokenize", subtree, {"docs": inputs_dir}, out)
    return stats, json.loads((out / "meta.json").read_text())


def test_outputs_round_trip_and_split(corpus, tmp_path):
    collect, rows = corpus
    stats, meta = run_stage(collect, tmp_path / "tok")
    out = tmp_path / "tok"
    for name in ("tokenizer.json", "train.bin", "val.bin", "train.idx.npy", "val.idx.npy"):
        assert (out / name).is_file(), name
    assert not (out / "parts").exists()
    assert meta["dtype"] == "uint16" and meta["tokenizer_vocab_size"] <= 400

    # The split is the id hash's: exactly the ids below the fraction (or the min_val_docs lowest).
    expected_val = encode.val_ids([r["id"] for r in rows], 0.1, 2)
    assert meta["val_docs"] == len(expected_val) and meta["train_docs"] == len(rows) - len(expected_val)

    tok = Tokenizer.from_file(str(out / "tokenizer.json"))
    bos, eos = meta["special_tokens"]["bos"], meta["special_tokens"]["eos"]
    for split, texts in (("val", [r["text"] for r in rows if r["id"] in expected_val]),
                         ("train", [r["text"] for r in rows if r["id"] not in expected_val])):
        tokens = np.fromfile(out / f"{split}.bin", dtype=np.uint16)
        idx = np.load(out / f"{split}.idx.npy")
        assert idx[0] == 0 and idx[-1] == len(tokens) and len(idx) == len(texts) + 1
        for text, a, b in zip(texts, idx[:-1], idx[1:]):
            ids = tokens[a:b].tolist()
            assert ids[0] == bos and ids[-1] == eos
            assert tok.decode(ids[1:-1]) == text  # byte-level BPE is lossless, unicode included

    assert meta["val_text_bytes"] == sum(len(r["text"].encode()) for r in rows if r["id"] in expected_val)
    val_tokens = meta["val_tokens"] - 2 * meta["val_docs"]
    assert meta["bytes_per_token_val"] == pytest.approx(meta["val_text_bytes"] / val_tokens, rel=1e-3)
    assert meta["bytes_per_token_val"] > 1.5  # merges happened: better than one token per byte
    assert stats["docs_in"] == len(rows) == stats["docs_kept"] and stats["dropped"] == {}
    assert stats["encode_mb_s"] > 0 and meta["sample"]["pieces"]


def test_special_tokens_come_first_and_are_atomic(corpus, tmp_path):
    collect, _ = corpus
    _, meta = run_stage(collect, tmp_path / "tok")
    sp = meta["special_tokens"]
    assert [sp["bos"], sp["eos"], sp["pad"]] == [0, 1, 2]
    assert list(sp["chat"].values()) == [3, 4, 5, 6] and sp["sentinels"] == [7, 8, 9, 10]
    tok = Tokenizer.from_file(str(tmp_path / "tok" / "tokenizer.json"))
    ids = tok.encode("<|user|>hi<|sentinel_3|>", add_special_tokens=False).ids
    assert ids[0] == 4 and ids[-1] == 10


def test_workers_do_not_change_the_output(tmp_path):
    collect = tmp_path / "collect"
    make_corpus(collect, n_docs=30, shard_docs=10)
    run_stage(collect, tmp_path / "one", workers=1)
    run_stage(collect, tmp_path / "two", workers=2)
    for name in ("train.bin", "val.bin", "tokenizer.json"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes(), name


def test_empty_documents_are_dropped_with_a_reason(tmp_path):
    collect = tmp_path / "collect"
    rows = make_corpus(collect, n_docs=20, shard_docs=10, empty_ids=(3, 15))
    stats, meta = run_stage(collect, tmp_path / "tok")
    assert stats["dropped"] == {"empty": 2}
    assert stats["docs_kept"] == len(rows) - 2 == meta["train_docs"] + meta["val_docs"]


def test_vocab_too_small_for_bytes_and_specials_is_a_clear_error(corpus, tmp_path):
    collect, _ = corpus
    with pytest.raises(StageError, match=r"tokenize.vocab_size=260 is too small.*256 byte tokens plus 11 special"):
        run_stage(collect, tmp_path / "tok", vocab_size=260)


def test_unknown_pre_tokenizer_is_a_clear_error(corpus, tmp_path):
    collect, _ = corpus
    with pytest.raises(StageError, match="pre_tokenizer must be one of gpt4|gpt2"):
        run_stage(collect, tmp_path / "tok", pre_tokenizer="bert")


def test_gpt2_pre_tokenizer_also_round_trips(corpus, tmp_path):
    collect, rows = corpus
    _, meta = run_stage(collect, tmp_path / "tok", pre_tokenizer="gpt2")
    tok = Tokenizer.from_file(str(tmp_path / "tok" / "tokenizer.json"))
    text = rows[0]["text"]
    assert tok.decode(tok.encode(text).ids) == text


def test_validation_split_is_stable_and_tiny_corpora_still_get_one():
    ids = [f"doc:{i}" for i in range(1000)]
    val = encode.val_ids(ids, 0.05, 2)
    assert val == encode.val_ids(list(reversed(ids)), 0.05, 2)  # order does not matter
    assert 25 < len(val) < 80  # ~5% by hash
    assert len(encode.val_ids(ids[:5], 0.0, 2)) == 2  # the minimum, by lowest hash
    assert len(encode.val_ids(ids[:1], 0.5, 2)) == 0  # never the whole corpus


def test_token_dtype_follows_the_vocabulary_size():
    assert encode.dtype_for(4096) == np.uint16
    assert encode.dtype_for(65536) == np.uint16
    assert encode.dtype_for(65537) == np.uint32


def test_jobs_cover_every_row_once_in_order_and_split_big_shards(tmp_path):
    collect = tmp_path / "collect"
    make_corpus(collect, n_docs=40, shard_docs=20)
    shards = sorted(collect.glob("shard-*.parquet"))
    jobs = encode.plan_jobs(shards, workers=4)
    assert len(jobs) > len(shards)  # 2 shards, 4 workers: shards are cut into row ranges
    for shard in shards:
        ranges = [rows for s, rows in jobs if s == shard]
        assert ranges[0][0] == 0 and ranges[-1][1] == 20
        assert all(a[1] == b[0] and a[0] < a[1] for a, b in zip(ranges, ranges[1:]))
    assert [s for s, _ in jobs] == sorted(s for s, _ in jobs)  # corpus order
