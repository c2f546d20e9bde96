"""The one exception type a user sees as ``lmdag error: ...``: its message names the file,
line, record or config key at fault and says what to do."""


class StageError(RuntimeError):
    """An error a user can act on: the message names the file, line or key at fault."""
