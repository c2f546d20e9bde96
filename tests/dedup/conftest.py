"""Tiny corpora for the dedup tests: real-looking paragraphs, planted copies, bad input."""
import json
import random
from pathlib import Path

import pytest

from pipeline.core.docs import ShardWriter, doc

WORDS = ("river stone light garden window letter morning voice city winter table paper forest "
         "music station bridge summer market island teacher doctor friend animal mountain road "
         "history science ocean village kitchen picture engine silver shadow harbor meadow").split()


def paragraph(rng: random.Random, n: int = 80) -> str:
    return " ".join(rng.choice(WORDS) + rng.choice(["", "", "", ",", "."]) for _ in range(n)).capitalize()


def edit_words(text: str, k: int, rng: random.Random) -> str:
    words = text.split(" ")
    for _ in range(k):
        words[rng.randrange(len(words))] = "zebra" + str(rng.randrange(10**6))
    return " ".join(words)


def write_corpus(directory: Path, rows: list[dict], shard_docs: int = 4) -> Path:
    w = ShardWriter(directory, shard_docs)
    for r in rows:
        w.add(r)
    w.close()
    (directory / "stats.json").write_text(json.dumps({"docs_kept": len(rows)}))
    return directory


@pytest.fixture
def planted(tmp_path) -> tuple[Path, dict]:
    """12 originals, 3 exact copies (one reformatted), 3 near copies (1-2 word edits), shards of 4."""
    rng = random.Random(7)
    originals = [paragraph(rng, 200) for _ in range(12)]  # 2 edits in 200 words: Jaccard ~0.9
    rows = [doc(f"orig-{i:02d}", t, "test") for i, t in enumerate(originals)]
    rows += [
        doc("exact-of-00", originals[0], "test"),
        doc("exact-of-01", originals[1], "test"),
        doc("reformatted-of-02", "  " + originals[2].upper().replace(" ", "\n"), "test"),
        doc("near-of-03", edit_words(originals[3], 1, rng), "test"),
        doc("near-of-04", edit_words(originals[4], 2, rng), "test"),
        doc("near-of-00", edit_words(originals[0], 1, rng), "test"),
    ]
    rng.shuffle(rows)
    return write_corpus(tmp_path / "in", rows), {r["id"]: r for r in rows}
