"""The one settings object: environment variables with the ``PERSONAE_`` prefix, all optional."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import platformdirs
from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


def default_database_url() -> str:
    data_dir = Path(platformdirs.user_data_dir("personae"))
    return f"sqlite+aiosqlite:///{data_dir / 'personae.db'}"


class Settings(BaseSettings):
    """Configuration read from ``PERSONAE_*`` variables (and a ``.env`` file if present)."""

    model_config = SettingsConfigDict(env_prefix="PERSONAE_", env_file=".env", extra="ignore")

    database_url: str = Field(default_factory=default_database_url)
    redis_url: str | None = None
    llm_url: str | None = None
    llm_model: str | None = None
    prompt_layout: str = "chat"  # "chat" (the server's chat template) or "mistral-raw" (BD-RP's training layout)
    llm_api_key: SecretStr | None = None
    discord_token: SecretStr | None = None
    telegram_token: SecretStr | None = None
    owner_ids: Annotated[list[str], NoDecode] = Field(default_factory=list)

    # Discord
    discord_api_base: str = "https://discord.com/api/v10"
    discord_gateway_url: str | None = None  # None: Discord's own gateway
    discord_admin_role: str | None = None  # a role name or id whose members count as admins
    discord_sync: str = "global"  # "global", "guild" (synced per guild: instant, for development) or "off"
    discord_guild_ids: Annotated[list[str], NoDecode] = Field(default_factory=list)  # guilds synced in "guild" mode

    # Telegram
    telegram_api_base: str = "https://api.telegram.org/bot"
    telegram_file_base: str = "https://api.telegram.org/file/bot"
    telegram_webhook_url: str | None = None  # set: webhook mode; unset: long polling
    telegram_webhook_secret: SecretStr | None = None
    telegram_webhook_listen: str = "0.0.0.0"
    telegram_webhook_port: int = 8443

    # Model requests
    max_tokens: int = 96
    temperature: float = 0.7
    max_input_tokens: int = 3500
    llm_concurrency: int = 96
    llm_timeout_s: float = 30.0
    turn_deadline_s: float = 90.0
    llm_retries: int = 3

    # Conversation
    history_turns: int = 40
    rate_limit_messages: int = 20
    rate_limit_window_s: float = 60.0
    dedupe_ttl_s: float = 86400.0
    cache_ttl_s: float = 3600.0
    max_message_chars: int = 4000
    max_concurrent_turns: int = 128  # turns answered at once; a burst beyond waits in arrival order

    # Durability: messages are stored on arrival; what a crash or an outage interrupts is picked up
    pending_answer_within_s: float = Field(default=600.0, ge=0)  # older unanswered messages get a short notice instead
    store_retry_s: float = Field(default=120.0, ge=0)  # how long a shown reply is retried while the database is away
    shutdown_grace_s: float = Field(default=20.0, ge=0)  # SIGTERM/SIGINT: replies in flight may finish within this

    # Character cards
    max_card_bytes: int = Field(default=20_000_000, gt=0)  # the largest card file (PNG, CharX, JSON) imported

    # Feelings: how emotions and intimacy move
    appraiser: Literal["auto", "lexicon", "model", "none"] = "auto"  # auto: model if LLM_URL is set, else lexicon
    appraiser_url: str | None = None  # the model appraiser's own server (default: LLM_URL)
    appraiser_concurrency: int = Field(default=8, ge=1)  # model appraisals in flight at most
    appraisal_window: int = Field(default=3, ge=1)  # exchanges the model appraiser reads
    appraisal_max_tokens: int = Field(default=256, ge=16)
    appraisal_temperature: float = Field(default=0.2, gt=0)
    appraisal_weight: float = Field(default=0.5, gt=0, le=1)  # how far one appraisal pulls the state
    max_emotion_step: int = Field(default=2, ge=0)  # largest change of one emotion per turn
    max_intimacy_step: int = Field(default=1, ge=0)  # largest change of intimacy per turn
    emotion_half_life_s: float = Field(default=6 * 3600.0, gt=0)  # idle emotions drift halfway back to the baseline

    @field_validator("owner_ids", "discord_guild_ids", mode="before")
    @classmethod
    def _split_ids(cls, value: object) -> object:
        if isinstance(value, str):
            return [v.strip() for v in value.split(",") if v.strip()]
        if isinstance(value, int):
            return [str(value)]
        return value

    @field_validator("redis_url", "llm_url", "llm_model", "discord_gateway_url", "telegram_webhook_url", "appraiser_url", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if value == "" else value
