"""A failure logged with its traceback reads as one line on the terminal; --debug shows the traceback."""

from __future__ import annotations

import logging

import pytest

from bots.cli import setup_logging


@pytest.fixture
def restore_logging():
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for name in ("personae", "bots", "core", "storage"):
        logging.getLogger(name).setLevel(logging.NOTSET)


def _log_a_failure() -> None:
    try:
        raise ValueError("the frame was not JSON\nsecond line")
    except ValueError:
        logging.getLogger("bots.discord.client").exception("could not read a frame")


def test_a_logged_exception_is_one_line_without_debug(capsys, restore_logging) -> None:
    setup_logging(debug=False)
    _log_a_failure()
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert err.endswith("could not read a frame [ValueError: the frame was not JSON; --debug shows the traceback]")


def test_debug_shows_the_whole_traceback(capsys, restore_logging) -> None:
    setup_logging(debug=True)
    _log_a_failure()
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "second line" in err
