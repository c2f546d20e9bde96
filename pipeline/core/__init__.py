"""What stages share: document shards, token files, word n-grams, pinned-archive fetching,
canaries, eval tasks, atomic publishing, and the step/key/plan machinery of the DAG.

Stage packages import this package (and pipeline.model, pipeline.train, kernels), never each
other; tests/test_imports.py enforces it. Nothing here imports torch at module level, so the
data stages stay torch-free.
"""
from pipeline.core.errors import StageError

__all__ = ["StageError"]
