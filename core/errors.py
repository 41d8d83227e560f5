"""Errors the domain raises, each with a message a person can act on."""

from __future__ import annotations


class PersonaeError(Exception):
    """Base class of every error personae raises on purpose."""


class ConfigurationError(PersonaeError):
    """A setting is missing or wrong: nothing will work until a person changes it (restarting does not help)."""


class InvalidInput(PersonaeError):
    """Input that cannot be accepted (a malformed card, a bad value); nothing was changed."""


class NotFound(PersonaeError):
    """A character, binding or other named thing does not exist."""


class Conflict(PersonaeError):
    """The change collides with what exists (a duplicate name, a stale version)."""


class PermissionDenied(PersonaeError):
    """The actor may not do this here."""


class ModelError(PersonaeError):
    """The model server could not produce a reply.

    ``retryable`` is true for failures that may pass on their own (overload, 5xx, timeouts,
    refused connections); false for requests the server will never accept (422).
    """

    def __init__(self, message: str, *, retryable: bool, status: int | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.status = status
