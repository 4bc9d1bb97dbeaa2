"""Domain exceptions of shortcut-audit.

The library raises these with a message that says what is wrong, where (file, column, option)
and how to fix it; the CLI prints them as one `Error: ...` line and exits with code 1.
"""


class AuditError(Exception):
    """Base class of every error the CLI reports without a traceback."""


class SourceError(AuditError):
    """A source file or folder cannot be read (missing, unreadable, not the expected container)."""


class FormatError(AuditError):
    """The source format is unknown, ambiguous, or the data lacks a required column."""


class ConfigError(AuditError):
    """An option has an invalid value."""


class EncodeError(AuditError):
    """A model returned unusable outputs (non-finite or all-zero embeddings); nothing of it is cached."""
