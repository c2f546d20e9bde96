"""A small synthetic corpus written as a finished collect-stage directory (shards + stats.json)."""
import json
import random

from pipeline.core.docs import doc, shard_name, write_table

WORDS = ("the of and to in a is that for it as was with be by on not he this are or his from at "
         "which but have an they you were her she there been one all we their has would when if "
         "so no time year people way day man thing woman life child world school state family "
         "student group country problem hand part place case week company system program number "
         "1984 2024 42 café naïve über — “quoted” 東京").split()


def make_corpus(directory, n_docs=60, shard_docs=20, seed=0, empty_ids=()):
    rng = random.Random(seed)
    rows = []
    for i in range(n_docs):
        words = [rng.choice(WORDS) for _ in range(rng.randint(30, 120))]
        text = " ".join(words).capitalize() + ".\n\n" + " ".join(rng.choice(WORDS) for _ in range(20)) + "."
        rows.append(doc(f"synthetic:{i}", "" if i in empty_ids else text, "synthetic"))
    for n, start in enumerate(range(0, len(rows), shard_docs)):
        write_table(directory / shard_name(n), rows[start:start + shard_docs])
    (directory / "stats.json").write_text(json.dumps({"docs_kept": len(rows)}))
    return rows
