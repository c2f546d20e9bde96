"""What stages share: document shards, token files, word n-grams, pinned-archive fetching,
canaries, eval tasks, atomic publishing, the step/key/plan machinery of the DAG, and the
training loop pieces (``core.train``) that pretraining, fine-tuning and distillation share.

Stage packages import this package (and pipeline.model, kernels), never each other;
tests/test_imports.py enforces it. The data-side modules never import torch, so the data
stages stay torch-free; ``core.train`` is for the stages that train.
"""
from pipeline.core.errors import StageError

__all__ = ["StageError"]
