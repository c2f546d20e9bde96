import numpy as np
import torch

from pipeline.core.train.batches import WindowSampler, eval_starts, micro_batch_start
from pipeline.core.train.config import Config


def test_an_epoch_reads_every_window_once_in_a_seeded_order():
    tokens = np.arange(1001, dtype=np.uint16)
    s = WindowSampler(tokens, seq_len=10, seed=7)
    assert s.n_windows == 100
    starts = s.window_starts(0, 100)
    assert sorted(starts.tolist()) == list(range(0, 1000, 10))
    assert starts.tolist() != list(range(0, 1000, 10))  # shuffled
    assert WindowSampler(tokens, 10, 7).window_starts(0, 100).tolist() == starts.tolist()
    assert WindowSampler(tokens, 10, 8).window_starts(0, 100).tolist() != starts.tolist()
    # the next epoch is a different permutation of the same windows
    nxt = s.window_starts(100, 100)
    assert sorted(nxt.tolist()) == sorted(starts.tolist()) and nxt.tolist() != starts.tolist()


def test_batch_targets_are_inputs_shifted_by_one():
    tokens = np.arange(500, dtype=np.uint16)
    x, y = WindowSampler(tokens, 16, 0).batch(3, 4)
    assert x.shape == y.shape == (4, 16) and x.dtype == torch.int64
    assert torch.equal(x[:, 1:], y[:, :-1]) and torch.equal(y[:, -1], x[:, -1] + 1)


def test_processes_together_read_what_one_process_reads_with_accumulation():
    one = Config(batch_size=2, grad_accum=4, nproc=1)
    two = Config(batch_size=2, grad_accum=2, nproc=2)
    four = Config(batch_size=2, grad_accum=1, nproc=4)
    for step in range(3):
        def samples(cfg):
            return sorted(micro_batch_start(step, a, r, cfg) + i for a in range(cfg.grad_accum)
                          for r in range(cfg.world_size) for i in range(cfg.batch_size))
        assert samples(one) == samples(two) == samples(four) == list(range(step * 8, step * 8 + 8))


def test_eval_windows_are_fixed_and_spread():
    assert eval_starts(101, 10, None).tolist() == list(range(0, 100, 10))
    picked = eval_starts(1001, 10, 5)
    assert picked.tolist() == [0, 250, 500, 740, 990]
