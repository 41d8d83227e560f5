"""The one mapping from what stopped a command to the lines a person reads and the exit status."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from bots.failures import EX_CONFIG, EX_FAILURE, EX_INTERRUPTED, explain
from bots.settings import Settings
from core.errors import ConfigurationError, ModelError, NotFound
from storage.connect_errors import cache_failure, database_failure
from storage.errors import CacheUnavailable, DatabaseRefused, DatabaseUnavailable, SchemaNotReady


def settings_error(**env: str) -> ValidationError:
    with pytest.raises(ValidationError) as caught:
        Settings(_env_file=None, **env)
    return caught.value


def test_a_bad_number_is_named_by_its_environment_variable_not_its_field() -> None:
    failure = explain(settings_error(max_tokens="abc"))
    assert failure.exit_code == EX_CONFIG
    assert failure.message == "invalid setting: PERSONAE_MAX_TOKENS='abc' must be a whole number"


@pytest.mark.parametrize("value", ["inf", "-inf", "nan", "Infinity"])
@pytest.mark.parametrize("field", ["replica_lease_s", "cache_ttl_s", "turn_deadline_s", "llm_slot_lease_s"])
def test_an_endless_number_is_a_bad_setting_not_a_later_surprise(field: str, value: str) -> None:
    # Accepted, "inf" went on to Redis as a lease and came back as an unexpected OverflowError.
    failure = explain(settings_error(**{field: value}))
    assert failure.exit_code == EX_CONFIG
    assert failure.message == f"invalid setting: PERSONAE_{field.upper()}={value!r} must be a finite number"


def test_every_bad_setting_is_named_on_one_line() -> None:
    failure = explain(settings_error(max_tokens="abc", telegram_webhook_port="99999", prompt_layout="sideways"))
    assert len(failure.message.splitlines()) == 1
    for name in ("PERSONAE_MAX_TOKENS", "PERSONAE_TELEGRAM_WEBHOOK_PORT", "PERSONAE_PROMPT_LAYOUT"):
        assert name in failure.message


@pytest.mark.parametrize("field, value", [
    ("llm_url", "gpu-host:8080"), ("llm_url", "ftp://x"), ("llm_url", "http://"), ("llm_url", "http://h:99999"),
    ("redis_url", "not-a-redis-url"), ("database_url", "mysql://x"), ("database_url", "not-a-url"),
    ("discord_gateway_url", "https://gateway.discord.gg"), ("appraiser_url", "gpu:80"),
])
def test_urls_are_checked_when_the_settings_load(field: str, value: str) -> None:
    failure = explain(settings_error(**{field: value}))
    assert failure.exit_code == EX_CONFIG
    assert f"PERSONAE_{field.upper()}" in failure.message


@pytest.mark.parametrize("field, value", [
    ("llm_url", "https://gpu-host:8080/"), ("redis_url", "rediss://:pw@cache:6380/2"),
    ("database_url", "postgresql+asyncpg://u:p@db/personae"), ("database_url", "sqlite:///relative.db"),
    ("database_url", "sqlite+aiosqlite://"), ("discord_gateway_url", "ws://127.0.0.1:9/gateway"),
])
def test_good_urls_pass(field: str, value: str) -> None:
    assert getattr(Settings(_env_file=None, **{field: value}), field) == value


def test_a_password_in_a_bad_url_is_not_echoed() -> None:
    failure = explain(settings_error(database_url="mysql://me:hunter2@db/x"))
    assert "hunter2" not in failure.message and "me:***@db" in failure.message


def test_database_failures_name_the_database_url() -> None:
    unreachable = explain(DatabaseUnavailable("cannot reach the database at postgresql://h/db: connection refused"))
    refused = explain(DatabaseRefused("the database at postgresql://h/db refused the login"))
    assert unreachable.exit_code == EX_FAILURE and refused.exit_code == EX_CONFIG
    for failure in (unreachable, refused):
        assert failure.message.endswith("\ncheck PERSONAE_DATABASE_URL")


def test_an_unmigrated_database_says_only_what_to_run() -> None:
    failure = explain(SchemaNotReady("the database at x has no personae tables yet; run `personae db upgrade`"))
    assert failure == explain(SchemaNotReady("the database at x has no personae tables yet; run `personae db upgrade`"))
    assert failure.exit_code == EX_FAILURE and "PERSONAE_" not in failure.message


def test_an_unreachable_redis_names_the_redis_url_and_the_way_out() -> None:
    failure = explain(CacheUnavailable("cannot reach Redis at redis://h:6379: connection refused"))
    assert failure.exit_code == EX_FAILURE
    assert "PERSONAE_REDIS_URL" in failure.message and "in-process" in failure.message


def test_a_message_that_names_its_setting_is_left_alone() -> None:
    message = "the model server at http://x refused the connection; is it running (PERSONAE_LLM_URL)?"
    assert explain(ModelError(message, retryable=True)).message == message


def test_configuration_errors_exit_78_others_1() -> None:
    assert explain(ConfigurationError("set PERSONAE_DISCORD_TOKEN")).exit_code == EX_CONFIG
    assert explain(NotFound("no character called 'x'")).exit_code == EX_FAILURE
    assert explain(KeyboardInterrupt()).exit_code == EX_INTERRUPTED


def test_an_unexpected_error_is_two_lines_pointing_at_debug() -> None:
    failure = explain(RuntimeError("boom\nsecond line"))
    assert failure.exit_code == EX_FAILURE
    assert failure.message.splitlines() == ["unexpected RuntimeError: boom", "run again with --debug for the details, and please report it"]


def test_connection_errors_are_told_apart() -> None:
    assert "connection refused" in str(database_failure(ConnectionRefusedError(111, "Connect call failed"), "pg"))
    assert "no answer in time" in str(database_failure(TimeoutError(), "pg"))
    assert "connection refused" in str(cache_failure(ConnectionError("Error 111 connecting to h:1. Connection refused."), "r"))
    assert "refused the login" in str(cache_failure(Exception("invalid username-password pair or user is disabled. AUTH"), "r"))


def test_setting_messages_say_each_thing_once() -> None:
    """No doubled prefix or value; an empty list entry is refused; a bad entry is quoted alone."""
    assert explain(settings_error(discord_shard_count="2", discord_shards="5")).message == (
        "invalid setting: PERSONAE_DISCORD_SHARDS names shard 5, but PERSONAE_DISCORD_SHARD_COUNT=2 has shards 0-1"
    )
    assert explain(settings_error(discord_shards="1-0")).message == (
        "invalid setting: PERSONAE_DISCORD_SHARDS: 1-0 is not a range: write low-high, e.g. 0-1"
    )
    empty = explain(settings_error(llm_url="http://a, ,http://b"))
    assert empty.exit_code == EX_CONFIG
    assert empty.message == "invalid setting: PERSONAE_LLM_URL has an empty entry (number 2 of 3): remove the extra comma"
    bad = explain(settings_error(llm_url="http://good-host:80,ftp://bad")).message
    assert "'ftp://bad'" in bad and "good-host" not in bad, bad


def test_the_bench_table_counts_one_request_in_the_singular() -> None:
    from bots.bench_processes import ProcessFigures, table

    assert "at most 1 request in flight" in table(ProcessFigures(processes=2, users=2, turns=2, max_in_flight_seen=1), [])
    assert "at most 3 requests in flight" in table(ProcessFigures(processes=2, users=2, turns=2, max_in_flight_seen=3), [])
