"""Atomic publishing: a directory appears complete or not at all.

Work happens in ``.tmp-<name>-<pid>`` beside the target and is renamed into place at the end;
a killed process leaves only its temporary directory, which the next run of the same target
removes (its process is gone). Readers treat a directory as finished when its completion
marker (``stats.json``) exists, and the marker is the last file written.
"""
from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

MARKER = "stats.json"


def is_complete(path) -> bool:
    return (Path(path) / MARKER).is_file()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temp_dirs(target: Path) -> None:
    """Temporary directories of ``target`` left by killed runs (their process is gone)."""
    for stale in target.parent.glob(f".tmp-{target.name}-*"):
        pid = stale.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not _pid_alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)


@contextlib.contextmanager
def atomic_dir(target):
    """``with atomic_dir(out) as tmp:`` write into ``tmp``; on success it becomes ``out``
    (replacing an older one), on any error or interrupt it is removed."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temp_dirs(target)
    tmp = target.parent / f".tmp-{target.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if target.exists():
        shutil.rmtree(target)
    os.replace(tmp, target)
