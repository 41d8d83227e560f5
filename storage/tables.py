"""The database tables, as SQLAlchemy Core ``Table`` objects on one ``MetaData``."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

# Deterministic constraint names, so that migrations (and SQLite batch mode) can refer to them.
NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
metadata = sa.MetaData(naming_convention=NAMING)

EMOTION_COLUMNS = ("happiness", "sadness", "disgust", "fear", "surprise", "anger")


class UtcDateTime(sa.TypeDecorator):
    """A timezone-aware datetime stored in UTC; naive values are taken to be UTC."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: sa.Dialect) -> dt.datetime | None:
        if value is None:
            return None
        value = value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)
        # SQLite has no time zone type: store naive UTC text so that comparisons stay lexical.
        return value if dialect.name == "postgresql" else value.replace(tzinfo=None)

    def process_result_value(self, value: dt.datetime | None, dialect: sa.Dialect) -> dt.datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


# Growing tables get 64-bit ids on PostgreSQL; SQLite only auto-increments INTEGER PRIMARY KEY.
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
# Audit snapshots are queried, not exported: JSONB on PostgreSQL.
AuditJson = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
NOW = sa.text("CURRENT_TIMESTAMP")


def _created() -> sa.Column:
    return sa.Column("created_at", UtcDateTime(), nullable=False, server_default=NOW)


characters = sa.Table(
    "characters",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(64), nullable=False),
    sa.Column("name_key", sa.Text, nullable=False),
    # Plain JSON (text) rather than JSONB: it keeps the card's key order, so export gives back the import.
    sa.Column("card", sa.JSON, nullable=False),
    # The image the card came with; read only when it is shown or exported, never on the chat path.
    sa.Column("avatar", sa.LargeBinary, nullable=True),
    sa.Column("avatar_ext", sa.String(8), nullable=True),  # "png", "jpg", "webp", ...
    _created(),
    sa.Column("updated_at", UtcDateTime(), nullable=False, server_default=NOW),
    sa.UniqueConstraint("name_key"),
)

bindings = sa.Table(
    "bindings",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("platform", sa.String(16), nullable=False),
    sa.Column("chat_id", sa.String(64), nullable=False),
    sa.Column("channel_id", sa.String(64), nullable=False),
    sa.Column(
        "character_id", sa.Integer, sa.ForeignKey("characters.id", ondelete="CASCADE"), nullable=False
    ),
    sa.Column("trigger", sa.String(16), nullable=False),
    sa.Column("scene", sa.Text, nullable=True),
    sa.Column("private", sa.Boolean, nullable=False),
    _created(),
    # Several characters may play in one channel (a scene): one binding each (migration 0006).
    sa.UniqueConstraint("platform", "channel_id", "character_id"),
    sa.CheckConstraint("trigger IN ('all', 'mention', 'conversation')", name="trigger"),
    sa.Index(None, "character_id"),
)

relationship_states = sa.Table(
    "relationship_states",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column(
        "character_id", sa.Integer, sa.ForeignKey("characters.id", ondelete="CASCADE"), nullable=False
    ),
    sa.Column("platform", sa.String(16), nullable=False),
    sa.Column("user_id", sa.String(64), nullable=False),
    *(sa.Column(name, sa.SmallInteger, nullable=False) for name in EMOTION_COLUMNS),
    sa.Column("intimacy", sa.SmallInteger, nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("updated_at", UtcDateTime(), nullable=False, server_default=NOW),
    sa.UniqueConstraint("character_id", "platform", "user_id"),
    *(sa.CheckConstraint(f"{name} BETWEEN 0 AND 10", name=name) for name in EMOTION_COLUMNS + ("intimacy",)),
    # /forget finds a person across characters.
    sa.Index(None, "platform", "user_id"),
)

state_changes = sa.Table(
    "state_changes",
    metadata,
    sa.Column("id", BigId, primary_key=True),
    sa.Column(
        "character_id", sa.Integer, sa.ForeignKey("characters.id", ondelete="CASCADE"), nullable=False
    ),
    sa.Column("platform", sa.String(16), nullable=False),
    sa.Column("user_id", sa.String(64), nullable=False),
    sa.Column("before", AuditJson, nullable=False),
    sa.Column("after", AuditJson, nullable=False),
    sa.Column("appraiser", sa.String(64), nullable=False),
    # No foreign key: the audit outlives a conversation reset.
    sa.Column("message_id", sa.BigInteger, nullable=True),
    sa.Column("reason", sa.Text, nullable=False),
    _created(),
    sa.Index("ix_state_changes_person", "character_id", "platform", "user_id", "id"),
    sa.Index(None, "platform", "user_id"),
)

messages = sa.Table(
    "messages",
    metadata,
    sa.Column("id", BigId, primary_key=True),
    sa.Column(
        "character_id", sa.Integer, sa.ForeignKey("characters.id", ondelete="CASCADE"), nullable=False
    ),
    sa.Column("platform", sa.String(16), nullable=False),
    sa.Column("channel_id", sa.String(64), nullable=False),
    sa.Column("user_id", sa.String(64), nullable=False),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("content", sa.Text, nullable=False),
    sa.Column("tokens", sa.Integer, nullable=False),
    sa.Column("platform_message_id", sa.String(128), nullable=True),
    # A person's message: pending (stored when it arrived, not yet answered), answered, failed (the
    # model server gave no reply), notice (a notice instead of a model call), undone, overheard (said
    # in a bound channel to no character: a scene line only). NULL on assistant rows.
    sa.Column("status", sa.String(16), nullable=True),
    sa.Column("display_name", sa.String(128), nullable=True),
    # The replica answering a pending message (PERSONAE_REPLICA_ID); another takes it over when it dies.
    sa.Column("claimed_by", sa.String(64), nullable=True),
    # The message's place in its conversation's history (migration 0005): one more than the
    # conversation's highest when it joins the history (answered, or stored as a reply or greeting);
    # NULL while pending. The id is arrival order, which is not the conversation's order.
    sa.Column("seq", BigId, nullable=True),
    _created(),
    sa.CheckConstraint("role IN ('user', 'assistant')", name="role"),
    sa.Index("ix_messages_conversation", "character_id", "platform", "channel_id", "user_id", "id"),
    sa.Index("ix_messages_history", "character_id", "platform", "channel_id", "user_id", "seq"),
    sa.Index(None, "platform", "user_id"),
    # A channel's scene: its conversations' lines, newest first (migration 0006).
    sa.Index("ix_messages_channel", "platform", "channel_id", "id"),
    # The record of a delivery: a redelivered platform message finds its row here.
    sa.Index("uq_messages_delivery", "platform", "channel_id", "platform_message_id", unique=True),
    sa.Index(
        "ix_messages_pending", "platform", "id",
        postgresql_where=sa.text("status = 'pending'"), sqlite_where=sa.text("status = 'pending'"),
    ),
    # A channel's overheard lines, newest first: the channel keeps only its newest (migration 0008).
    sa.Index(
        "ix_messages_overheard", "platform", "channel_id", "id",
        postgresql_where=sa.text("status = 'overheard'"), sqlite_where=sa.text("status = 'overheard'"),
    ),
)

# The platform messages a stored reply was shown in (a reply may take several): a person replying to
# one of them is answered by the character that wrote it (migration 0006). Goes with its reply.
reply_messages = sa.Table(
    "reply_messages",
    metadata,
    sa.Column("platform", sa.String(16), primary_key=True),
    sa.Column("channel_id", sa.String(64), primary_key=True),
    sa.Column("platform_message_id", sa.String(128), primary_key=True),
    sa.Column("message_id", BigId, sa.ForeignKey("messages.id", ondelete="CASCADE"), nullable=False),
    sa.Index(None, "message_id"),
)

processed_events = sa.Table(
    "processed_events",
    metadata,
    sa.Column("platform", sa.String(16), primary_key=True),
    sa.Column("event_id", sa.String(128), primary_key=True),
    _created(),
)

memories = sa.Table(
    "memories",
    metadata,
    sa.Column("id", BigId, primary_key=True),
    sa.Column(
        "character_id", sa.Integer, sa.ForeignKey("characters.id", ondelete="CASCADE"), nullable=False
    ),
    sa.Column("platform", sa.String(16), nullable=False),
    # The scope: the conversation's channel (a private chat's memories stay in the private chat).
    sa.Column("channel_id", sa.String(64), nullable=False),
    sa.Column("user_id", sa.String(64), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("text", sa.Text, nullable=False),
    sa.Column("tokens", sa.Integer, nullable=False),
    # The history messages it was condensed from (their ``messages.seq`` range).
    sa.Column("seq_from", sa.BigInteger, nullable=False),
    sa.Column("seq_to", sa.BigInteger, nullable=False),
    _created(),
    sa.CheckConstraint("kind IN ('fact', 'event', 'relationship')", name="kind"),
    sa.Index("ix_memories_conversation", "character_id", "platform", "channel_id", "user_id", "id"),
    sa.Index(None, "platform", "user_id"),
)

# How far each conversation's history has been condensed into memories: the last ``seq`` read.
memory_marks = sa.Table(
    "memory_marks",
    metadata,
    sa.Column(
        "character_id", sa.Integer, sa.ForeignKey("characters.id", ondelete="CASCADE"), primary_key=True
    ),
    sa.Column("platform", sa.String(16), primary_key=True),
    sa.Column("channel_id", sa.String(64), primary_key=True),
    sa.Column("user_id", sa.String(64), primary_key=True),
    sa.Column("through_seq", sa.BigInteger, nullable=False),
    sa.Column("updated_at", UtcDateTime(), nullable=False, server_default=NOW),
    sa.Index(None, "platform", "user_id"),
)

TABLES = (
    "characters", "bindings", "relationship_states", "state_changes", "messages", "reply_messages",
    "processed_events", "memories", "memory_marks",
)
