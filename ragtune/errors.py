"""The one error type for user mistakes.

Anything a user can fix (a bad config key, a missing file, a column that does not exist) raises
:class:`RagtuneError`. The CLI prints its message and exits with code 2, without a traceback. Any
other exception is a bug in ragtune and is shown with its traceback.
"""


class RagtuneError(ValueError):
    """A user error: bad input, bad config, a file that cannot be read. The message says what to fix."""


def special_file_kind(path) -> str | None:
    """What ``path`` is when it exists but is neither a regular file nor a folder ("named pipe
    (FIFO)", "character device", ...); None for a regular file, a folder or a missing path.

    Uses ``os.stat`` only: a named pipe must never be opened (``open`` blocks until a writer comes),
    and a device such as ``/dev/zero`` reads without end."""
    import os
    import stat

    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):
        return None
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    if stat.S_ISFIFO(mode):
        return "named pipe (FIFO)"
    if stat.S_ISCHR(mode):
        return "character device"
    if stat.S_ISBLK(mode):
        return "block device"
    if stat.S_ISSOCK(mode):
        return "socket"
    return "special file"


def check_regular_file(path, what: str) -> None:
    """Raise :class:`RagtuneError` ``"<what>: <path> is a named pipe (FIFO), not a regular file"``
    when ``path`` exists and is a special file; call it BEFORE opening ``path``. A missing path or a
    folder passes (the caller reports those in its own words)."""
    kind = special_file_kind(path)
    if kind is not None:
        raise RagtuneError(f"{what}: {path} is a {kind}, not a regular file")
