"""Errors storage raises on purpose, each with a message that says what to do."""

from __future__ import annotations

from core.errors import PersonaeError


class StorageError(PersonaeError):
    """The database is not usable as it is."""


class DatabaseUnavailable(StorageError):
    """The database server or file cannot be reached or opened."""


class SchemaNotReady(StorageError):
    """The database lacks personae's tables or has an older (or newer) schema than this code."""
