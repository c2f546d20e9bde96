"""One running workflow per results directory.

Snakemake locks its working directory, but ``results_dir`` may live anywhere: two invocations
from different directories (or a sweep and a rerun) could write the same step directories at
once. The run that executes jobs holds an exclusive ``flock`` on ``<results>/.lock`` for its
whole life (the kernel drops it when the process dies, however it dies); a second run is
refused at once with the holder's pid. Dry runs (``-n``) and Snakemake's own job processes
(``--no-hooks``) never take it.
"""
from __future__ import annotations

import fcntl
import os
from pathlib import Path

_HELD: dict[Path, int] = {}  # results dir -> the open descriptor holding its lock


class ResultsInUse(RuntimeError):
    pass


def hold(results) -> None:
    """Take the lock on ``results`` for the rest of this process, or raise ResultsInUse."""
    results = Path(results).resolve()
    if results in _HELD:
        return
    results.mkdir(parents=True, exist_ok=True)
    fd = os.open(results / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise ResultsInUse(f"{results} is in use by another run (pid {holder}): wait for it to finish, "
                           f"or give this run its own results_dir=...") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    _HELD[results] = fd


def release(results) -> None:
    fd = _HELD.pop(Path(results).resolve(), None)
    if fd is not None:
        os.close(fd)  # closing the descriptor drops the flock
