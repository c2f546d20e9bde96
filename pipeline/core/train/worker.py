"""A torchrun worker: ``python -m torch.distributed.run ... -m pipeline.core.train.worker SPEC.json``.

Runs the spec's entry (``module:function``) in this process. Rank 0 logs to the stage's
log.txt and leaves its stats for the launching stage to read; the other ranks log beside
the checkpoints (kept if the run fails).
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path

from pipeline.core.train import distributed, loop


def main(argv: list[str]) -> int:
    spec = loop.Spec.load(Path(argv[0]))
    d = distributed.from_env()
    log = logging.getLogger(f"lmdag.train.rank{d.rank}")
    log.setLevel(logging.INFO)
    handler = logging.FileHandler(Path(spec.out_dir) / "log.txt" if d.main else Path(spec.ckpt_dir) / f"log-rank{d.rank}.txt")
    handler.setFormatter(logging.Formatter(f"%(asctime)s %(levelname)s [rank {d.rank}] %(message)s"))
    log.addHandler(handler)
    stats = loop.call_entry(spec, log)
    if stats is not None:
        loop.write_worker_stats(Path(spec.out_dir), stats)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
