"""Train/test n-gram overlap and the dedup hook's building block."""
from pipeline.core.ngrams import NgramIndex, ngram_hashes
from pipeline.evaluate.contamination import report

TRAIN = ["In the beginning God created the heaven and the earth and the earth was without form and void",
         "Completely unrelated text about snakes and pipelines and language models trained on CPUs today"]


def test_a_shared_13_gram_makes_an_example_dirty():
    index = NgramIndex.from_texts(TRAIN, n=13)
    copied = "Question: in the BEGINNING, god created the heaven and the earth; and the earth was without form?"
    clean = "Question: what did the quick brown fox jump over on a sunny day in the park near the river?"
    assert index.overlaps(copied)
    assert not index.overlaps(clean)
    r = report(index, [copied, clean, "too short"])
    assert (r["examples"], r["checked"], r["dirty"]) == (3, 2, 1)
    assert 0 < r["ngram_overlap"] < 1


def test_short_examples_use_one_gram_of_all_words():
    assert len(ngram_hashes("one two three four five six seven eight", 13)) == 1
    assert len(ngram_hashes("one two three", 13)) == 0  # below min_words: not checked
    assert len(ngram_hashes(" ".join(map(str, range(20))), 13)) == 8


def test_hashes_are_stable_across_processes():
    # crc32-based: the same text hashes the same in every worker, unlike Python's hash()
    assert int(ngram_hashes("a b c d e f g h", 8)[0]) == int(ngram_hashes("A b, c d e f g h!", 8)[0])
    import subprocess
    import sys

    code = "from pipeline.core.ngrams import ngram_hashes; print(int(ngram_hashes('a b c d e f g h', 8)[0]))"
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert other == str(int(ngram_hashes("a b c d e f g h", 8)[0]))
