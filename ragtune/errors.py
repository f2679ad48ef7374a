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


MODEL_META_HINT = ("a ragtune model.json (a JSON object with a task key, written by `ragtune run`); "
                   "train a run with `ragtune run CONFIG --out DIR`")


def read_model_meta(path, tasks=None) -> dict:
    """The JSON object in a run's ``model.json`` at ``path``: a RagtuneError naming the file and what was
    expected when it is a folder or a special file, not UTF-8, not valid JSON, nested too deeply, not
    an object, or has no ``task`` among ``tasks`` (when given). A missing file is the caller's to report."""
    import json
    import os

    if os.path.isdir(path):
        raise RagtuneError(f"{path} is a folder; expected {MODEL_META_HINT}")
    check_regular_file(path, "model.json")
    try:
        with open(path, encoding="utf-8") as f:
            meta = json.load(f)
    except UnicodeDecodeError as exc:
        raise RagtuneError(f"{path}: not UTF-8 text (byte offset {exc.start}); expected {MODEL_META_HINT}") from None
    except json.JSONDecodeError as exc:
        raise RagtuneError(f"{path}: not valid JSON ({exc.msg}, line {exc.lineno}); expected {MODEL_META_HINT}") from None
    except RecursionError:
        raise RagtuneError(f"{path}: nested too deeply to read; expected {MODEL_META_HINT}") from None
    except OSError as exc:
        raise RagtuneError(f"{path}: cannot be read ({exc.strerror or exc}); expected {MODEL_META_HINT}") from None
    if not isinstance(meta, dict):
        raise RagtuneError(f"{path}: holds a JSON {type(meta).__name__}, not an object; expected {MODEL_META_HINT}")
    task = meta.get("task")
    if "task" not in meta:
        hint = " (it looks like a Hugging Face config.json)" if "model_type" in meta or "architectures" in meta else ""
        raise RagtuneError(f"{path}: no 'task' key{hint}; expected {MODEL_META_HINT}")
    if tasks is not None and (not isinstance(task, str) or task not in tasks):
        raise RagtuneError(f"{path}: task {task!r} is not one of {list(tasks)}; expected {MODEL_META_HINT}")
    return meta


def bad_model_meta(path, task: str, exc: BaseException) -> RagtuneError:
    """The RagtuneError for a ``model.json`` whose keys do not describe a ``task`` model (a KeyError,
    TypeError or ValueError while rebuilding the model from it)."""
    detail = f"missing key {exc.args[0]!r}" if isinstance(exc, KeyError) and exc.args else f"{type(exc).__name__}: {exc}"
    return RagtuneError(f"{path}: not the model.json of a finished ragtune {task} run ({detail}); "
                        "train the run again with `ragtune run CONFIG --out DIR`")
