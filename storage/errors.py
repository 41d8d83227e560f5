"""Errors storage raises on purpose, each with a message that says what to do."""

from __future__ import annotations

from core.errors import ConfigurationError, InvalidInput, PersonaeError


class StorageError(PersonaeError):
    """The database is not usable as it is."""


class DatabaseUnavailable(StorageError):
    """The database server or file cannot be reached or opened."""


class DatabaseRefused(DatabaseUnavailable, ConfigurationError):
    """The database server answered but refused us: unknown user, wrong password, no such database."""


class InvalidDatabaseURL(InvalidInput, ConfigurationError):
    """The database URL cannot be parsed or names a database personae does not work with."""


class SchemaNotReady(StorageError):
    """The database lacks personae's tables or has an older (or newer) schema than this code."""


class CacheUnavailable(StorageError):
    """Redis cannot be reached, or refused the connection."""
