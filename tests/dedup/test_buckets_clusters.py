import numpy as np

from pipeline.dedup.buckets import band_pairs, exact_groups
from pipeline.dedup.clusters import UnionFind, preference


def test_exact_groups_label_by_first_member():
    keys = np.zeros((6, 16), dtype=np.uint8)
    keys[:, 0] = [5, 1, 5, 2, 1, 5]
    assert exact_groups(keys).tolist() == [0, 1, 0, -1, 1, 0]


def test_band_pairs_all_pairs_within_window_only():
    keys = np.array([7, 7, 7, 3, 9, 9], dtype=np.uint64)
    docs = np.arange(6) * 10
    pairs, largest = band_pairs(keys, docs, window=64)
    assert sorted(map(tuple, pairs.tolist())) == [(0, 10), (0, 20), (10, 20), (40, 50)]
    assert largest == 3
    pairs, _ = band_pairs(keys, docs, window=1)
    assert sorted(map(tuple, pairs.tolist())) == [(0, 10), (10, 20), (40, 50)]


def test_union_find_components():
    uf = UnionFind(6)
    for a, b in [(0, 3), (3, 5), (1, 2)]:
        uf.union(a, b)
    roots = [uf.find(i) for i in range(6)]
    assert roots[0] == roots[3] == roots[5] and roots[1] == roots[2] and len(set(roots)) == 3


def test_keep_rules():
    doc, length = np.array([30, 10, 20]), np.array([5, 5, 9])
    assert preference("first", doc, length).tolist() == [2, 0, 1]
    assert preference("longest", doc, length).tolist() == [2, 1, 0]  # 20 is longest; ties -> earliest
