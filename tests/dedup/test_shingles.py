import numpy as np

from pipeline.dedup.shingles import shard_shingles, shard_words, words


TRICKY = [
    "Hello, World! It's 2024 — naïve café_au_lait résumé.",
    "ÉCOLE École école",
    "日本語のテキスト と 中文 文本 mixed with English",
    "tabs\tand\nnewlines\r\nand   spaces",
    "under_score snake_case __dunder__ 3.14 1,000",
    "Ελληνικά κείμενα και Кириллица текст",
    "",
    "   \n\t ",
    "!!! ??? ...",
]


def test_shard_tokenizer_agrees_with_python_words():
    h, off = shard_words(TRICKY)
    for i, text in enumerate(TRICKY):
        assert off[i + 1] - off[i] == len(words(text)), text
    # equal words hash equal: "école" appears three times in the second text
    second = h[off[1]:off[2]]
    assert len(set(second.tolist())) == 1


def test_exact_key_ignores_case_punctuation_and_spacing_only():
    texts = ["The cat sat, on the mat.", "the CAT sat on\n the mat", "the cat sat on a mat", "", "  ", "x!"]
    ex = shard_shingles(texts, 5).exact
    assert (ex[0] == ex[1]).all()
    assert not (ex[0] == ex[2]).all()
    assert (ex[3] == ex[4]).all(), "empty and whitespace-only texts are the same (empty) text"
    assert not (ex[3] == ex[5]).all(), "texts without words are keyed by their raw text"


def test_shingle_counts_and_short_documents():
    texts = ["a b c d e f g", "a b", "", "a b c d e"]
    sh = shard_shingles(texts, 5)
    assert sh.counts().tolist() == [3, 1, 0, 1]
    # windows never cross documents: doc 3's one shingle equals doc 0's first
    assert sh.of(3)[0] == sh.of(0)[0]
    # a short document's shingle depends only on its own words
    assert shard_shingles(["a b"], 5).values[0] == sh.of(1)[0]
    assert len(np.unique(sh.values)) == 4  # "a b c d e" twice, the rest distinct
