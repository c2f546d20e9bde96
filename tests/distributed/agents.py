"""Start one command N times at once and wait for them all, as ``srun --ntasks=N`` would on N
nodes: the tests' stand-in launcher for a multi-node run on one machine.

    python -m tests.distributed.agents 2 torchrun --nnodes=2 ... (train.launcher="python -m tests.distributed.agents 2")

When one copy fails the others are stopped (a lone torchrun agent would wait at the
rendezvous), and the first non-zero exit code is returned.
"""
from __future__ import annotations

import subprocess
import sys
import time


def main(argv: list[str]) -> int:
    count, cmd = int(argv[0]), argv[1:]
    procs = [subprocess.Popen(cmd) for _ in range(count)]
    while any(p.poll() is None for p in procs):
        failed = [p.returncode for p in procs if p.returncode]
        if failed:
            for p in procs:
                if p.poll() is None:
                    p.terminate()
            for p in procs:
                p.wait()
            return failed[0]
        time.sleep(0.2)
    return next((p.returncode for p in procs if p.returncode), 0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
