import random

import numpy as np
import pytest

from pipeline.dedup.minhash import SIG_EMPTY, _balanced, candidate_probability, lsh_params, signatures
from pipeline.dedup.shingles import shard_shingles


def pair_with_jaccard(rng, n_words=300, edits=0):
    base = [f"w{rng.randrange(10**9)}" for _ in range(n_words)]
    other = list(base)
    for _ in range(edits):
        other[rng.randrange(n_words)] = f"x{rng.randrange(10**9)}"
    return " ".join(base), " ".join(other)


def exact_jaccard(a, b, sh, i, j):
    sa, sb = set(sh.of(i).tolist()), set(sh.of(j).tolist())
    return len(sa & sb) / len(sa | sb)


def test_signature_agreement_estimates_jaccard_without_bias():
    rng = random.Random(3)
    texts = []
    for k in range(60):
        texts += pair_with_jaccard(rng, edits=k % 30)
    sh = shard_shingles(texts, 5)
    sig = signatures(sh, 256, seed=1)
    errors = []
    for p in range(0, len(texts), 2):
        true = exact_jaccard(texts[p], texts[p + 1], sh, p, p + 1)
        est = np.mean(sig[p] == sig[p + 1])
        errors.append(est - true)
    errors = np.array(errors)
    # binomial standard error at J ~ 0.5, 256 perms: 0.031; the mean of 60 errors: 0.004
    assert abs(errors.mean()) < 0.015
    assert errors.std() < 0.045


def test_identical_texts_identical_signatures_and_empty_documents_get_the_sentinel():
    sh = shard_shingles(["one two three four five six", "", "one two three four five six"], 5)
    sig = signatures(sh, 64, seed=1)
    assert (sig[0] == sig[2]).all()
    assert (sig[1] == SIG_EMPTY).all()


def test_signatures_do_not_depend_on_the_shard_a_document_is_in():
    texts = ["alpha beta gamma delta epsilon zeta eta", "theta iota kappa lambda mu nu xi omicron"]
    together = signatures(shard_shingles(texts, 5), 32, 9)
    alone = signatures(shard_shingles(texts[1:], 5), 32, 9)
    assert (together[1] == alone[0]).all()


def test_derived_bands_rows_keep_recall_at_the_threshold():
    assert lsh_params(0.8, 128, "exact", 0.99) == (21, 6)
    for t in (0.5, 0.7, 0.8, 0.9):
        b, r = lsh_params(t, 128, "exact", 0.99)
        assert b * r <= 128
        assert candidate_probability(t, b, r) >= 0.99
        # the most selective such split: one more row would lose recall
        assert candidate_probability(t, 128 // (r + 1), r + 1) < 0.99


@pytest.mark.parametrize("threshold,num_perm", [(0.8, 128), (0.5, 64), (0.9, 256)])
def test_unverified_split_matches_datasketch(threshold, num_perm):
    datasketch_lsh = pytest.importorskip("datasketch.lsh")
    assert _balanced(threshold, num_perm) == datasketch_lsh._optimal_param(threshold, num_perm, 0.5, 0.5)
