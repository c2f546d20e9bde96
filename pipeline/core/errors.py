"""The one exception type a user sees as ``lmdag error: ...``: its message names the file,
line, record or config key at fault and says what to do."""
import contextlib
import errno


class StageError(RuntimeError):
    """An error a user can act on: the message names the file, line or key at fault."""


# A full disk, a read-only or unwritable directory, a file-size limit: the path and what to do,
# not a traceback from deep inside a writer.
WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS, errno.EFBIG,
                errno.ENOTDIR, errno.EEXIST}


def write_error(err: OSError, where=None) -> StageError | None:
    """The user-facing error for an OSError raised while writing output (``where``: the
    directory being written, when the error does not name a file), else None."""
    if err.errno not in WRITE_ERRNOS:
        return None
    where = err.filename if err.filename is not None else (where or "the output directory")
    why = "a file is in the way where a directory must be" if err.errno in (errno.EEXIST, errno.ENOTDIR) else err.strerror
    return StageError(f"cannot write {where}: {why}. Free space there, or point out=/results_dir "
                      f"at a writable directory; nothing was published (a finished step has its stats.json)")


@contextlib.contextmanager
def writes_to(where, name: str):
    """``with writes_to(out, step):`` an OSError of writing inside becomes write_error's StageError."""
    try:
        yield
    except OSError as err:
        if (clear := write_error(err, where)) is None:
            raise
        raise StageError(f"{name}: {clear}") from err
