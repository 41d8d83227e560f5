"""The SQL implementations of core's repository Protocols, one module per table family."""

from storage.repositories.bindings import SqlBindingRepository
from storage.repositories.characters import SqlCharacterRepository, name_key
from storage.repositories.events import SqlEventRepository
from storage.repositories.memories import SqlMemoryRepository
from storage.repositories.messages import SqlMessageRepository
from storage.repositories.relationships import SqlRelationshipRepository

__all__ = [
    "SqlBindingRepository",
    "SqlCharacterRepository",
    "SqlEventRepository",
    "SqlMemoryRepository",
    "SqlMessageRepository",
    "SqlRelationshipRepository",
    "name_key",
]
