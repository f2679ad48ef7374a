"""The one error type for user mistakes.

Anything a user can fix (a bad config key, a missing file, a column that does not exist) raises
:class:`RagtuneError`. The CLI prints its message and exits with code 2, without a traceback. Any
other exception is a bug in ragtune and is shown with its traceback.
"""


class RagtuneError(ValueError):
    """A user error: bad input, bad config, a file that cannot be read. The message says what to fix."""
