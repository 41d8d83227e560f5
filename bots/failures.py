"""The one place that turns whatever stops a command into one or two lines and an exit status.

Lower layers raise errors that say what went wrong (``core.errors``, ``storage.errors``, the
adapters' start errors); this module adds which setting to change, picks the exit status, and
keeps tracebacks for the log (``--debug``).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

from pydantic import ValidationError

from bots.settings import LISTED_URLS, Settings, env_name
from core.errors import ConfigurationError, PersonaeError
from storage.errors import CacheUnavailable, DatabaseUnavailable, InvalidDatabaseURL

log = logging.getLogger(__name__)

EX_FAILURE = 1
EX_CONFIG = 78  # sysexits.h EX_CONFIG: a supervisor (compose) should not restart into the same error
EX_INTERRUPTED = 130

# URLs are echoed back without their password; secret settings (tokens, keys) not at all.
_PASSWORD_IN_URL = re.compile(r"(//[^:/@]*:)[^@/]*@")


@dataclass(frozen=True, slots=True)
class Failure:
    """What the person reads (one or two lines, no traceback) and the exit status."""

    message: str
    exit_code: int


def explain(exc: BaseException) -> Failure:
    """The message and exit status for an exception that reached the top of a command."""
    if isinstance(exc, KeyboardInterrupt):
        return Failure("interrupted", EX_INTERRUPTED)
    if isinstance(exc, ValidationError):
        return Failure(settings_message(exc), EX_CONFIG)
    if isinstance(exc, PersonaeError):
        code = EX_CONFIG if isinstance(exc, ConfigurationError) else EX_FAILURE
        return Failure(_with_setting(exc), code)
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return Failure(
        f"unexpected {type(exc).__name__}{': ' + first if first else ''}\n"
        "run again with --debug for the details, and please report it",
        EX_FAILURE,
    )


KINDS = ("configuration", "database", "cache", "model", "timeout", "input", "other")


def kind(exc: BaseException | None) -> str:
    """Which of ``KINDS`` an error is (the label of the errors metric): the service to look at."""
    from core.errors import InvalidInput, ModelError

    if exc is None:
        return "other"
    if isinstance(exc, ModelError):
        return "model"
    if isinstance(exc, CacheUnavailable) or type(exc).__module__.startswith("redis"):
        return "cache"
    if isinstance(exc, DatabaseUnavailable) or type(exc).__module__.startswith(("sqlalchemy", "asyncpg", "aiosqlite", "sqlite3")):
        return "database"
    if isinstance(exc, ConfigurationError):
        return "configuration"
    if isinstance(exc, InvalidInput):
        return "input"
    if isinstance(exc, TimeoutError):
        return "timeout"
    return "other"


def report(exc: BaseException) -> Failure:
    """``explain(exc)``, with the traceback sent to the log at DEBUG (shown by ``--debug``)."""
    log.debug("the command stopped on this error", exc_info=exc)
    return explain(exc)


def settings_message(exc: ValidationError) -> str:
    """One line naming each bad environment variable and what it must be."""
    problems = []
    for error in exc.errors():
        field = str(error["loc"][0]) if error.get("loc") else ""
        what = _what_it_must_be(error)
        if not field:  # a check across settings: its message names them
            problems.append(what if what.startswith("PERSONAE_") else f"a PERSONAE_ setting {what}")
            continue
        shown = _shown_value(field, error.get("input"))
        if shown and field in LISTED_URLS and "," in shown:
            shown = ""  # the message quotes the entry that is wrong: not the whole list
        elif shown and any(part.strip() and what.startswith(part.strip() + " ") for part in str(error.get("input")).split(",")):
            shown = ":"  # the message starts with the part that is wrong: not the whole value again
        problems.append(f"{env_name(field)}{shown} {what}")
    return "invalid setting: " + "; ".join(problems)


def _shown_value(field: str, value: object) -> str:
    info = Settings.model_fields.get(field)
    if not isinstance(value, (str, int, float)) or info is None or "SecretStr" in str(info.annotation):
        return ""
    text = _PASSWORD_IN_URL.sub(r"\1***@", str(value))
    return f"={text!r}" if len(text) <= 80 else ""


def _what_it_must_be(error: dict) -> str:
    kind, message = error.get("type", ""), str(error.get("msg", ""))
    if kind == "int_parsing" or kind == "int_type":
        return "must be a whole number"
    if kind == "float_parsing" or kind == "float_type":
        return "must be a number"
    if kind == "bool_parsing":
        return "must be true or false"
    message = message.removeprefix("Value error, ")
    return re.sub(r"^Input should be", "must be", message)


def _with_setting(exc: PersonaeError) -> str:
    """The error's own words, plus the variable that points at the failing service when they do not name it."""
    message = str(exc)
    if "PERSONAE_" in message:
        return message
    if isinstance(exc, (DatabaseUnavailable, InvalidDatabaseURL)):
        return f"{message}\ncheck PERSONAE_DATABASE_URL"
    if isinstance(exc, CacheUnavailable):
        return f"{message}\ncheck PERSONAE_REDIS_URL, or unset it to use the in-process cache"
    return message
