"""Bad bytes through the CLI: a lone surrogate in an argument (an undecodable byte in argv) or in a card,
NUL and control characters, a card with a 100,000-digit number: one line or clean text, never a traceback."""

from __future__ import annotations

import json
from pathlib import Path

from tests.test_cli_cards import character, cli, db, write  # noqa: F401  (db is a fixture)

CARD = {
    "spec": "chara_card_v2",
    "spec_version": "2.0",
    "data": {"name": "Yor\u0000ick\udfff", "description": "A fellow\u001b of \ud800infinite\u0007 jest.", "extensions": {"ke\u0000y": "v"}},
}


async def test_a_card_with_nul_controls_and_lone_surrogates_is_imported_clean(db, tmp_path: Path) -> None:
    raw = json.dumps(CARD).encode()  # the escapes stay escapes: valid JSON, bad text once parsed
    result = await cli("characters", "import", str(write(tmp_path, "yorick.json", raw)))

    assert result.exit_code == 0, result.output
    assert result.stdout == "Yorick\ufffd\n"
    stored, _ = await character(db, "Yorick\ufffd")
    assert stored.card["data"]["description"] == "A fellow of \ufffdinfinite jest."
    assert stored.card["data"]["extensions"] == {"key": "v"}


async def test_a_card_with_a_100000_digit_number_is_refused_with_one_line(db, tmp_path: Path) -> None:
    raw = b'{"name": "Big", "data_size": ' + b"7" * 100_000 + b"}"
    result = await cli("characters", "import", str(write(tmp_path, "big.json", raw)))

    assert result.exit_code == 1
    assert "Traceback" not in result.output
    (line,) = result.stderr.splitlines()
    assert "a number with 100,000 digits; the limit is 18" in line


async def test_a_lone_surrogate_in_an_argument_gives_one_line(db) -> None:
    # Python decodes an undecodable argv byte (here 0xff) to the lone surrogate U+DCFF.
    result = await cli("characters", "show", "Ham\udcfflet")

    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert result.stderr == "error: There is no character called 'Ham\ufffdlet'.\n"


async def test_an_edit_with_bad_bytes_stores_clean_text(db) -> None:
    assert (await cli("characters", "list")).exit_code == 0  # the samples are imported on first use
    result = await cli("characters", "edit", "Mira", "scene=By the \udcffsea\x00,\x1b at dusk.\r\nLater.")

    assert result.exit_code == 0, result.output
    stored, _ = await character(db, "Mira")
    # Clean, and one line (the scene is one line of the system prompt).
    assert stored.card["data"]["scenario"] == "By the \ufffdsea, at dusk. Later."
