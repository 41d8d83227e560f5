"""The one settings object: environment variables with the ``PERSONAE_`` prefix, all optional."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

import platformdirs
from pydantic import Field, SecretStr, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

ENV_PREFIX = "PERSONAE_"
# The schemes each URL setting accepts (checked when the settings load, so a typo fails before any connection).
URL_SCHEMES: dict[str, tuple[str, ...]] = {
    "database_url": ("postgresql", "postgres", "postgresql+asyncpg", "sqlite", "sqlite+aiosqlite"),
    "redis_url": ("redis", "rediss", "unix"),
    "llm_url": ("http", "https"),
    "appraiser_url": ("http", "https"),
    "eval_partner_url": ("http", "https"),
    "eval_judge_url": ("http", "https"),
    "discord_api_base": ("http", "https"),
    "discord_gateway_url": ("ws", "wss"),
    "telegram_api_base": ("http", "https"),
    "telegram_file_base": ("http", "https"),
    "telegram_webhook_url": ("http", "https"),
}
URL_EXAMPLES = {
    "database_url": "postgresql://user:password@host:5432/personae or sqlite:////absolute/path/personae.db",
    "redis_url": "redis://host:6379/0",
    "llm_url": "http://gpu-host:8080",
    "appraiser_url": "http://gpu-host:8080",
    "eval_partner_url": "http://judge-host:8000",
    "eval_judge_url": "http://judge-host:8000",
}
PROMPT_LAYOUTS = ("auto", "training", "chat")
# URL settings that may list several servers, comma-separated (a pool: bots.llm.pool).
LISTED_URLS = ("llm_url", "appraiser_url")
LAYOUT_ALIASES = {"mistral-raw": "training"}  # the training layout's earlier name


def env_name(field: str) -> str:
    """The environment variable that sets ``field``: ``max_tokens`` -> ``PERSONAE_MAX_TOKENS``."""
    return ENV_PREFIX + field.upper()


def default_database_url() -> str:
    data_dir = Path(platformdirs.user_data_dir("personae"))
    return f"sqlite+aiosqlite:///{data_dir / 'personae.db'}"


def default_heartbeat_file() -> Path:
    return Path(platformdirs.user_state_dir("personae")) / "heartbeat"


class Settings(BaseSettings):
    """Configuration read from ``PERSONAE_*`` variables (and a ``.env`` file if present)."""

    # allow_inf_nan=False: "inf" or "nan" in a number setting is refused here, not found out later
    # as an unexpected error (a lease of "inf" seconds cannot be sent to Redis).
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_file=".env", extra="ignore", allow_inf_nan=False)

    database_url: str = Field(default_factory=default_database_url)
    redis_url: str | None = None
    redis_prefix: str = "personae:"  # every key starts with it: deployments sharing one Redis keep apart
    # Replicas (several processes on one database and Redis): this process's name in leases and on the
    # messages it takes (default: host-pid-random), and how long a lease lasts unrenewed (renewed every third).
    replica_id: str | None = None
    replica_lease_s: float = Field(default=10.0, ge=1)
    llm_url: str | None = None
    llm_model: str | None = None
    # "training" (BD-RP's own layout, sent as a raw completion), "chat" (the server's chat template), or
    # "auto": training when the served model is a BeyondDialogue one (BD-RP), chat otherwise.
    prompt_layout: str = "auto"
    llm_api_key: SecretStr | None = None
    discord_token: SecretStr | None = None
    telegram_token: SecretStr | None = None
    owner_ids: Annotated[list[str], NoDecode] = Field(default_factory=list)
    heartbeat_file: Path = Field(default_factory=default_heartbeat_file)  # `personae run` writes it; `personae health` reads it

    # What an operator watches: /metrics, /healthz and /readyz on this port (unset: not served), and the log lines
    metrics_port: int | None = Field(default=None, ge=1, le=65535)
    metrics_host: str = "127.0.0.1"
    log_format: Literal["text", "json"] = "text"
    log_message_text: bool = False  # true: log lines may quote what people wrote (off: never)

    # Discord
    discord_api_base: str = "https://discord.com/api/v10"
    discord_gateway_url: str | None = None  # None: Discord's own gateway
    discord_admin_role: str | None = None  # a role name or id whose members count as admins
    discord_sync: str = "global"  # "global", "guild" (synced per guild: instant, for development) or "off"
    discord_guild_ids: Annotated[list[str], NoDecode] = Field(default_factory=list)  # guilds synced in "guild" mode
    # Sharding: both unset: one connection. SHARD_COUNT a number or "auto" (Discord's recommended count);
    # SHARDS the ones this process runs ("0-3", "0,2"; default: all). Replicas share one count.
    discord_shard_count: str | None = None
    discord_shards: str | None = None
    # Characters speak through a channel webhook under their own name and avatar (on), or as the bot (off).
    discord_webhooks: bool = True
    # A channel where the bot uploads each character's avatar once, for the webhook messages' pictures
    # (Discord needs a link; unset: the characters speak with Discord's default picture).
    discord_avatar_channel: int | None = Field(default=None, ge=1)

    # Telegram
    telegram_api_base: str = "https://api.telegram.org/bot"
    telegram_file_base: str = "https://api.telegram.org/file/bot"
    telegram_webhook_url: str | None = None  # set: webhook mode; unset: long polling
    telegram_webhook_secret: SecretStr | None = None
    telegram_webhook_listen: str = "0.0.0.0"
    telegram_webhook_port: int = Field(default=8443, ge=1, le=65535)
    telegram_give_up_s: float = Field(default=300.0, gt=0)  # polling without an answer this long: exit non-zero (restart)

    # Model requests
    max_tokens: int = Field(default=96, ge=1)
    temperature: float = Field(default=0.7, ge=0, le=5)
    max_input_tokens: int = Field(default=3500, ge=64)
    llm_concurrency: int = Field(default=96, ge=1)  # this process's requests in flight at most
    # The whole deployment's requests in flight per model server (every replica on PERSONAE_REDIS_URL);
    # one channel takes at most LLM_CHANNEL_SHARE of it; a dead replica's slots return after LLM_SLOT_LEASE_S.
    llm_max_in_flight: int = Field(default=96, ge=1)
    llm_channel_share: float = Field(default=0.25, gt=0, le=1)
    llm_slot_lease_s: float = Field(default=15.0, gt=0)
    llm_timeout_s: float = Field(default=30.0, gt=0)  # the longest wait between one streamed delta and the next
    llm_connect_timeout_s: float = Field(default=5.0, gt=0)  # to open a connection to the model server
    llm_first_token_timeout_s: float = Field(default=60.0, gt=0)  # from the request to its first text (a busy GPU queues)
    turn_deadline_s: float = Field(default=90.0, gt=0)
    llm_retries: int = Field(default=3, ge=0)  # resends of a request the server never worked on (unreachable, 429, 503)

    # Conversation
    history_turns: int = Field(default=40, ge=0)
    # A card's example dialogue (mes_example) sent as leading turns, for characters that do not set
    # examples=on|off themselves; off by default: BeyondDialogue was never trained on such turns.
    card_examples: bool = False
    # A channel is a scene: the share of the input budget the others' lines there may take (0: each
    # person's thread alone, as in a private chat); PERSONAE_CONVERSATION_TURNS: the answers of
    # characters to each other the ``conversation`` trigger allows after the reply to a person's
    # message, before a person must speak again (0: none).
    scene_share: float = Field(default=0.25, ge=0, le=0.9)
    # How the others' lines reach the model: folded into the person's turns, or in the scene slot (docs/scenes.md).
    scene_layout: Literal["turns", "slot"] = "turns"
    conversation_turns: int = Field(default=2, ge=0, le=10)
    # Lorebooks (a card's character_book): the most tokens its entries add to the scene (a card's
    # token_budget may lower it; 0: lorebooks off), and the extra scan passes in which activated
    # entries' content activates others (0: no recursion, as SillyTavern by default).
    lore_tokens: int = Field(default=400, ge=0, le=4000)
    lore_recursion: int = Field(default=0, ge=0, le=3)
    rate_limit_messages: int = Field(default=20, ge=1)
    rate_limit_window_s: float = Field(default=60.0, gt=0)
    cache_ttl_s: float = Field(default=3600.0, gt=0)
    max_message_chars: int = Field(default=4000, ge=1)
    max_concurrent_turns: int = Field(default=128, ge=1)  # turns answered at once; a burst beyond waits in arrival order
    # Messages waiting for an answer, per person in one chat and in all; past either: one notice,
    # then dropped (logged). Keep the first above RATE_LIMIT_MESSAGES: the rate notice comes first.
    max_waiting_per_person: int = Field(default=25, ge=1)
    max_waiting_turns: int = Field(default=4096, ge=1)
    # Writing replies into a busy room (a channel, a group): a message that would wait longer than
    # this for its reply's first text to be written is dropped (logged) instead of queued.
    delivery_max_wait_s: float = Field(default=30.0, gt=0)
    # Discord's per-channel buckets when discord.py has not learned them yet (sends and edits apart).
    discord_channel_writes: int = Field(default=5, ge=1)
    discord_channel_window_s: float = Field(default=5.0, gt=0)

    # Durability: messages are stored on arrival; what a crash or an outage interrupts is picked up
    pending_answer_within_s: float = Field(default=600.0, ge=0)  # older unanswered messages get a short notice instead
    store_retry_s: float = Field(default=120.0, ge=0)  # how long a shown reply is retried while the database is away
    shutdown_grace_s: float = Field(default=20.0, ge=0)  # SIGTERM/SIGINT: replies in flight may finish within this

    # Character cards
    max_card_bytes: int = Field(default=20_000_000, gt=0)  # the largest card file (PNG, CharX, JSON) imported
    # With PERSONAE_LLM_URL set, an import asks the model for the world, traits, MBTI and style a card
    # lacks; the import reply waits this long at most for that proposal (then it says how to fill them).
    derive_timeout_s: float = Field(default=20.0, gt=0)

    # Feelings: how emotions and intimacy move
    appraiser: Literal["auto", "lexicon", "model", "none"] = "auto"  # auto: model if LLM_URL is set, else lexicon
    appraiser_url: str | None = None  # the model appraiser's own server (default: LLM_URL)
    appraiser_concurrency: int = Field(default=8, ge=1)  # model appraisals in flight at most
    appraisal_window: int = Field(default=3, ge=1)  # exchanges the model appraiser reads
    appraisal_max_tokens: int = Field(default=768, ge=16)  # the trained answer: analysis, then the object
    appraisal_temperature: float = Field(default=0.2, gt=0)
    appraisal_weight: float = Field(default=0.5, gt=0, le=1)  # how far one appraisal pulls the state
    appraisal_cadence: str = "every"  # every, every:N (each person's Nth exchange), moved (the lexicon sees a change)
    max_emotion_step: int = Field(default=2, ge=0)  # largest change of one emotion per turn
    max_intimacy_step: int = Field(default=1, ge=0)  # largest change of intimacy per turn
    emotion_half_life_s: float = Field(default=6 * 3600.0, gt=0)  # idle emotions drift halfway back to the baseline

    # Long-term memory: turns that leave the history window are condensed by the model into short
    # memories per person and chat, and the relevant ones join the scene of later prompts
    memory: Literal["auto", "on", "off"] = "auto"  # auto: on when PERSONAE_LLM_URL is set (the bundled model is too small)
    memory_tokens: int = Field(default=800, ge=16)  # kept per person in one chat; past it the oldest events go first
    memory_prompt_tokens: int = Field(default=200, ge=0)  # added to the scene of one prompt at most
    memory_batch: int = Field(default=10, ge=1)  # messages out of the history window before they are condensed
    memory_max_tokens: int = Field(default=512, ge=32)  # the condensing answer's budget

    # `personae eval`: the models that play the partner and judge (unset: the model under test)
    eval_partner_url: str | None = None
    eval_partner_model: str | None = None
    eval_judge_url: str | None = None
    eval_judge_model: str | None = None

    @field_validator("owner_ids", "discord_guild_ids", mode="before")
    @classmethod
    def _split_ids(cls, value: object) -> object:
        if isinstance(value, str):
            return [v.strip() for v in value.split(",") if v.strip()]
        if isinstance(value, int):
            return [str(value)]
        return value

    # An empty value is unset: a line left as `PERSONAE_DISCORD_TOKEN=` in .env starts nothing.
    @field_validator(
        "redis_url", "replica_id", "discord_shard_count", "discord_shards", "llm_url", "llm_model", "discord_gateway_url", "telegram_webhook_url", "appraiser_url",
        "discord_token", "telegram_token", "llm_api_key", "telegram_webhook_secret",
        "eval_partner_url", "eval_judge_url", "eval_partner_model", "eval_judge_model",
        mode="before",
    )
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator(*URL_SCHEMES, mode="after")
    @classmethod
    def _known_scheme(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return value
        field = info.field_name or ""
        if field in LISTED_URLS:
            # Several model servers, comma-separated: each one must be a URL.
            urls = [u.strip() for u in value.split(",")]
            if not any(urls):
                raise ValueError(f"lists no URL; expected e.g. {URL_EXAMPLES[field]} or several, comma-separated")
            if len(urls) == 1:
                return cls._one_url(urls[0], field)
            for number, url in enumerate(urls, 1):
                if not url:
                    raise ValueError(f"has an empty entry (number {number} of {len(urls)}): remove the extra comma")
                try:
                    cls._one_url(url, field)
                except ValueError as exc:
                    raise ValueError(f"has the entry {url!r}, which {exc}") from None
            return ",".join(urls)
        return cls._one_url(value, field)

    @staticmethod
    def _one_url(value: str, field: str) -> str:
        allowed = URL_SCHEMES[field]
        example = URL_EXAMPLES.get(field, f"{allowed[0]}://host")
        scheme = value.partition("://")[0].lower() if "://" in value else ""
        if scheme not in allowed:
            # Not a URL error the validator's wording would explain: say what a good one looks like.
            kinds = list(dict.fromkeys(s.partition("+")[0] + "://" for s in allowed))
            listed = ", ".join(kinds[:-1]) + " or " + kinds[-1] if len(kinds) > 1 else kinds[0]
            raise ValueError(f"must be a URL starting with {listed}, e.g. {example}")
        if scheme not in ("sqlite", "sqlite+aiosqlite", "unix"):
            try:
                parts = urlsplit(value)
                parts.port  # noqa: B018  (raises on a port that is not a number or out of range)
            except ValueError:
                raise ValueError(f"has a bad port; expected e.g. {example}") from None
            if not parts.hostname:
                raise ValueError(f"names no host; expected e.g. {example}")
        return value

    @property
    def llm_urls(self) -> list[str]:
        """The model servers PERSONAE_LLM_URL lists (none: the bundled model)."""
        return self.llm_url.split(",") if self.llm_url else []

    @property
    def lock_lease_s(self) -> float:
        """How long a conversation lock outlasts its holder's last renewal: a dead replica's turns are
        taken over once its liveness lease has run out and a sweep (every third of it) has claimed
        them, so its locks are let go half a lease after that (15 s at the default 10)."""
        return 1.5 * self.replica_lease_s

    @property
    def appraiser_urls(self) -> list[str]:
        return self.appraiser_url.split(",") if self.appraiser_url else []

    @field_validator("discord_shard_count", mode="after")
    @classmethod
    def _known_shard_count(cls, value: str | None) -> str | None:
        if value is None or value.strip().lower() == "auto":
            return None if value is None else "auto"
        if not value.strip().isdigit() or int(value) < 1:
            raise ValueError("must be a number of shards (1 or more) or auto")
        return str(int(value))

    @field_validator("discord_shards", mode="after")
    @classmethod
    def _known_shards(cls, value: str | None) -> str | None:
        if value is None:
            return value
        from bots.discord.shards import parse_shards

        parse_shards(value)  # ValueError says what is wrong
        return value.strip()

    @model_validator(mode="after")
    def _shards_within_count(self) -> "Settings":
        if self.discord_shards and self.discord_shard_count not in (None, "auto"):
            from bots.discord.shards import parse_shards

            count = int(self.discord_shard_count)
            outside = [i for i in parse_shards(self.discord_shards) if i >= count]
            if outside:
                raise ValueError(
                    f"PERSONAE_DISCORD_SHARDS names shard {outside[0]}, but PERSONAE_DISCORD_SHARD_COUNT={count} "
                    f"has shards 0-{count - 1}"
                )
        return self

    @field_validator("appraisal_cadence", mode="after")
    @classmethod
    def _known_cadence(cls, value: str) -> str:
        from core.cadence import parse_cadence

        kind, n = parse_cadence(value)  # ValueError says what is allowed
        return f"{kind}:{n}" if kind == "every" and n > 1 else kind

    @field_validator("prompt_layout", mode="after")
    @classmethod
    def _known_layout(cls, value: str) -> str:
        value = LAYOUT_ALIASES.get(value, value)
        if value not in PROMPT_LAYOUTS:
            raise ValueError(f"must be one of {', '.join(PROMPT_LAYOUTS)}")
        return value
