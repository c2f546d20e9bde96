"""The benchmark's ground truth: the prefix-filter all-pairs join equals brute force."""
import itertools
import random

from benchmarks.corpus import all_pairs, paragraph_docs, shingle_sets
from tests.dedup.conftest import edit_words, paragraph


def test_all_pairs_join_equals_brute_force():
    rng = random.Random(11)
    docs = [paragraph(rng, rng.randrange(3, 150)) for _ in range(40)]
    docs += [edit_words(d, rng.randrange(0, 3), rng) for d in docs[:25]]
    docs += ["", "one", "one two"]
    sets = shingle_sets(docs)
    for t in (0.5, 0.8):
        pairs, sims = all_pairs(sets, t)
        brute = {}
        for i, j in itertools.combinations(range(len(sets)), 2):
            a, b = set(sets[i].tolist()), set(sets[j].tolist())
            if a and b and len(a & b) / len(a | b) >= t:
                brute[(i, j)] = len(a & b) / len(a | b)
        assert {tuple(p) for p in pairs.tolist()} == set(brute)
        assert all(abs(brute[tuple(p)] - s) < 1e-12 for p, s in zip(pairs.tolist(), sims))
        assert len(brute) > 10


def test_shingles_are_exact_word_tuples():
    sets = shingle_sets(["a b c d e f", "A, b c d e!", "a b c d x"])
    assert len(sets[0]) == 2 and len(sets[1]) == 1 and set(sets[1].tolist()) < set(sets[0].tolist())
    assert not set(sets[2].tolist()) & set(sets[0].tolist())


def test_paragraph_documents_are_paragraph_sized():
    text = "\n\n".join(" ".join(["word"] * n) for n in (30, 200, 10, 900, 5))
    docs = paragraph_docs(text)
    assert all(len(d) >= 700 for d in docs[:-1])
    assert all(len(d) <= 700 + 2000 for d in docs)  # a short buffer plus one piece of a long paragraph
