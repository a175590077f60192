"""The errors pyrite raises on purpose; each front end translates them in one place."""


class PyriteError(Exception):
    """Base of every error meant for the user: its message is safe to show as is."""


class ValidationError(PyriteError):
    """The input is malformed or not allowed (a bad name, id, query or value)."""


class NotFoundError(PyriteError):
    """The named KB or entry does not exist."""


class ConflictError(PyriteError):
    """The thing to create exists already."""


class ConfigError(PyriteError):
    """The settings are wrong or a required piece (driver, provider) is missing."""


class BusyError(PyriteError):
    """The request ran out of its time budget (or waited that long for a turn); try again shortly."""

    retry_after = 1


class EmbeddingError(PyriteError):
    """An embedding provider failed; `retryable` and `per_input` guide the queue."""

    def __init__(
        self,
        message: str,
        *,
        retryable: bool = True,
        per_input: bool = False,
        misconfigured: bool = False,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.per_input = per_input
        self.misconfigured = misconfigured
        self.retry_after = retry_after


class StorageError(PyriteError):
    """A KB's folder or file cannot be read or written (not writable, disk full); the message says what to do."""
