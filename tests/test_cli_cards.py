"""`personae characters import/export/derive` and `personae prompt` with card files, on a SQLite file.

Each command runs the real CLI (in a worker thread: it starts its own event loop) against a
migrated SQLite database named by PERSONAE_DATABASE_URL; `derive` talks to the TGI test double.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any, AsyncIterator

import pytest
from typer.testing import CliRunner

from bots.cli import app
from core.card_files import read_card_file, to_v2
from core.cards import normalise_card
from storage import migrate
from storage.database import SqlStore
from tests.card_builders import BAD_FILES, charx_card, foreign_card, json_card, png_card
from tests.tgi_server import TGIServer

runner = CliRunner()
SAMPLE_NAMES = {"Hamlet", "林黛玉", "Mira"}  # imported by the CLI into an empty database


@pytest.fixture
async def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    url = f"sqlite+aiosqlite:///{tmp_path / 'personae.db'}"
    await migrate.upgrade(url)
    monkeypatch.chdir(tmp_path)  # no .env file from the working tree
    monkeypatch.setenv("PERSONAE_DATABASE_URL", url)
    for name in ("PERSONAE_REDIS_URL", "PERSONAE_LLM_URL", "PERSONAE_MAX_CARD_BYTES"):
        monkeypatch.delenv(name, raising=False)
    return url


async def cli(*args: str, input: str | None = None, env: dict[str, str | None] | None = None):
    return await asyncio.to_thread(runner.invoke, app, list(args), input=input, env=env)


NO_MODEL_SERVER = {"PERSONAE_LLM_URL": None}  # for one command: as if PERSONAE_LLM_URL were unset


async def character(url: str, name: str):
    store = await SqlStore.open(url)
    try:
        found = await store.characters.get_by_name(name)
        avatar = await store.characters.avatar(found.id) if found else None
        return found, avatar
    finally:
        await store.close()


async def names(url: str) -> set[str]:
    store = await SqlStore.open(url)
    try:
        return {c.name for c in await store.characters.list()}
    finally:
        await store.close()


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def image_chunks(png: bytes) -> list[bytes]:
    """The chunks that make the picture (everything but text), to compare two PNGs' images."""
    out, pos = [], 8
    while pos < len(png):
        length = int.from_bytes(png[pos : pos + 4], "big")
        ctype = png[pos + 4 : pos + 8]
        if ctype not in (b"tEXt", b"zTXt", b"iTXt"):
            out.append(png[pos : pos + 12 + length])
        pos += 12 + length
    return out


# -- import -------------------------------------------------------------------------------------


async def test_import_of_a_png_card_keeps_the_card_and_its_image(db, tmp_path) -> None:
    png = png_card()
    result = await cli("characters", "import", str(write(tmp_path, "ophelia.png", png)))

    assert result.exit_code == 0, result.output
    assert result.stdout == "Ophelia\n"
    assert result.stderr.startswith("note: this card has no world, traits, mbti, style")
    assert "personae characters derive 'Ophelia'" in result.stderr
    stored, avatar = await character(db, "Ophelia")
    assert stored.card["data"]["extensions"]["some_other_app"] == {"keep": True}
    assert avatar == (png, "png")


async def test_import_of_a_charx_card_keeps_its_icon(db, tmp_path) -> None:
    charx = charx_card()
    result = await cli("characters", "import", str(write(tmp_path, "ophelia.charx", charx)))

    assert result.exit_code == 0, result.output
    _, avatar = await character(db, "Ophelia")
    assert avatar == (read_card_file(charx).avatar, "png")


async def test_import_of_a_json_card(db, tmp_path) -> None:
    result = await cli("characters", "import", str(write(tmp_path, "ophelia.json", json_card())))

    assert result.exit_code == 0, result.output
    stored, avatar = await character(db, "Ophelia")
    assert stored.card == normalise_card(foreign_card()) and avatar is None


@pytest.mark.parametrize("label, filename, make, message", BAD_FILES, ids=[b[0] for b in BAD_FILES])
async def test_a_bad_card_file_is_one_line_on_stderr_and_stores_nothing(db, tmp_path, label, filename, make, message) -> None:
    result = await cli("characters", "import", str(write(tmp_path, filename, make())))

    assert result.exit_code == 1
    assert result.stdout == ""
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: Could not import the card: ") and message.lower() in line.lower()
    assert await names(db) == SAMPLE_NAMES


async def test_a_file_over_the_limit_is_refused_before_it_is_read(db, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("PERSONAE_MAX_CARD_BYTES", "1000")
    path = write(tmp_path, "ophelia.png", png_card())
    result = await cli("characters", "import", str(path))

    assert result.exit_code == 1
    assert result.stderr == f"error: {path} is {path.stat().st_size:,} bytes; the limit is 1,000 (PERSONAE_MAX_CARD_BYTES)\n"
    assert "Ophelia" not in await names(db)


async def test_a_missing_file_is_a_clear_error(db, tmp_path) -> None:
    result = await cli("characters", "import", str(tmp_path / "nowhere.png"))

    assert result.exit_code == 1
    assert result.stderr.startswith("error: cannot read ") and "No such file" in result.stderr


# -- export -------------------------------------------------------------------------------------


async def test_png_import_export_round_trip_keeps_card_and_picture(db, tmp_path) -> None:
    png = png_card()
    assert (await cli("characters", "import", str(write(tmp_path, "in.png", png)))).exit_code == 0
    out = tmp_path / "out.png"

    result = await cli("characters", "export", "ophelia", "--format", "png", "-o", str(out))

    assert result.exit_code == 0, result.output
    exported = out.read_bytes()
    read = read_card_file(exported)
    assert read.card["spec"] == "chara_card_v3"  # ccv3 is read first; chara holds the V2 form
    assert to_v2(read.card) == normalise_card(foreign_card())
    assert exported.count(b"tEXtchara\x00") == 1 and exported.count(b"tEXtccv3\x00") == 1
    assert image_chunks(exported) == image_chunks(png)


async def test_a_card_without_an_avatar_exports_onto_the_placeholder(db, tmp_path) -> None:
    assert (await cli("characters", "import", str(write(tmp_path, "in.json", json_card())))).exit_code == 0
    out = tmp_path / "out.png"

    assert (await cli("characters", "export", "Ophelia", "--format", "png", "-o", str(out))).exit_code == 0
    assert to_v2(read_card_file(out.read_bytes()).card) == normalise_card(foreign_card())


async def test_charx_export_round_trip_keeps_card_and_icon(db, tmp_path) -> None:
    png = png_card()
    assert (await cli("characters", "import", str(write(tmp_path, "in.png", png)))).exit_code == 0
    out = tmp_path / "out.charx"

    assert (await cli("characters", "export", "Ophelia", "--format", "charx", "-o", str(out))).exit_code == 0
    read = read_card_file(out.read_bytes())
    assert read.source_format == "charx" and read.avatar == png
    assert to_v2(read.card)["data"]["extensions"] == foreign_card()["data"]["extensions"]


async def test_json_export_goes_to_stdout_and_imports_back_the_same(db, tmp_path) -> None:
    assert (await cli("characters", "import", str(write(tmp_path, "in.png", png_card())))).exit_code == 0
    stored, _ = await character(db, "Ophelia")

    result = await cli("characters", "export", "Ophelia")

    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == stored.card
    out = tmp_path / "out.json"
    assert (await cli("characters", "export", "Ophelia", "--format", "json", "-o", str(out))).exit_code == 0
    assert json.loads(out.read_text(encoding="utf-8")) == stored.card


@pytest.mark.parametrize("fmt", ["png", "charx"])
async def test_binary_export_needs_a_file(db, fmt) -> None:
    result = await cli("characters", "export", "Hamlet", "--format", fmt)

    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr == f"error: a {fmt.upper()} file is binary: give a file to write it to with -o FILE\n"


async def test_an_unknown_format_or_character_is_a_clear_error(db, tmp_path) -> None:
    result = await cli("characters", "export", "Hamlet", "--format", "gif", "-o", str(tmp_path / "x"))
    assert result.exit_code == 1 and result.stderr == "error: unknown format 'gif'; supported: json, png, charx\n"

    result = await cli("characters", "export", "Nobody")
    assert result.exit_code == 1 and result.stderr == "error: There is no character called 'Nobody'.\n"


# -- prompt -------------------------------------------------------------------------------------


async def test_prompt_reads_a_png_card_and_says_which_fields_fall_back(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = await cli("prompt", str(write(tmp_path, "ophelia.png", png_card())), "--user", "Hamlet", "--json")

    assert result.exit_code == 0, result.output
    notes = result.stderr.splitlines()
    assert notes[0] == "note: this card has no world, traits, mbti, style, language, emotion, relationship: the prompt uses fallbacks"
    assert len(notes) == 2 and notes[1].startswith("layout: auto: ")  # which layout a server would get
    system = json.loads(result.stdout)["messages"][0]["content"]
    assert "Ophelia's character traits are gentle, obedient, fragile." in system
    assert "MBTI personality type is not specified." in system


# -- derive -------------------------------------------------------------------------------------

PROPOSAL = {"world": "The Danish court at Elsinore", "traits": ["gentle", "obedient", "fragile"], "mbti": "ISFJ", "style": ["soft", "hesitant"]}


@pytest.fixture
async def tgi(db, monkeypatch) -> AsyncIterator[TGIServer]:
    async with TGIServer() as server:
        monkeypatch.setenv("PERSONAE_LLM_URL", server.base_url)
        monkeypatch.setenv("PERSONAE_LLM_RETRIES", "0")
        yield server


async def imported(db: str, tmp_path: Path, card: dict[str, Any] | None = None):
    """Import a card as it comes, with no model server (so nothing is derived on import)."""
    result = await cli("characters", "import", str(write(tmp_path, "in.png", png_card(card))), env=NO_MODEL_SERVER)
    assert result.exit_code == 0, result.output
    stored, _ = await character(db, "Ophelia")
    return stored


async def test_derive_with_accept_fills_the_missing_fields_from_the_models_proposal(db, tgi, tmp_path) -> None:
    before = await imported(db, tmp_path)
    tgi.reply = json.dumps(PROPOSAL)

    result = await cli("characters", "derive", "Ophelia", "--accept")

    assert result.exit_code == 0, result.output
    assert result.stdout == (
        "Proposed for Ophelia:\nworld: The Danish court at Elsinore\ntraits: gentle, obedient, fragile\n"
        "mbti: ISFJ\nstyle: soft, hesitant\nUpdated Ophelia.\n"
    )
    after, avatar = await character(db, "Ophelia")
    assert {k: after.card["data"]["extensions"]["personae"][k] for k in PROPOSAL} == PROPOSAL
    assert not {"world", "traits", "mbti", "style"} & set(after.profile.missing)
    assert after.card["data"]["extensions"]["some_other_app"] == {"keep": True}
    assert after.card["data"]["description"] == before.card["data"]["description"]
    assert avatar is not None  # an edit keeps the avatar
    # A BD-RP server (the double's model) gets it in the training layout, as the replies and the
    # appraisals: the raw string on TGI's /generate, guided by the schema.
    assert tgi.count("/v1/chat/completions") == 0
    (body,) = tgi.bodies("/generate")
    grammar = body["parameters"]["grammar"]
    assert grammar["type"] == "json"
    assert set(grammar["value"]["required"]) == {"world", "traits", "mbti", "style"}
    prompt = body["inputs"]
    assert prompt.startswith("You are a helpful assistant.[INST] ") and prompt.endswith(" [/INST]")
    assert "A noblewoman of Denmark" in prompt and "Ophelia: (lowers her eyes)" in prompt and "{{char}}" not in prompt


async def test_derive_without_accept_shows_the_proposal_and_writes_nothing(db, tgi, tmp_path) -> None:
    before = await imported(db, tmp_path)
    tgi.reply = json.dumps(PROPOSAL)

    result = await cli("characters", "derive", "Ophelia")

    assert result.exit_code == 0, result.output
    assert "mbti: ISFJ" in result.stdout
    assert result.stderr == "not written: run again with --accept to write it\n"
    assert (await character(db, "Ophelia"))[0].card == before.card


async def test_derive_keeps_fields_the_card_already_has(db, tgi, tmp_path) -> None:
    card = foreign_card()
    card["data"]["extensions"]["personae"] = {"mbti": "INFP"}
    await imported(db, tmp_path, card)
    tgi.reply = json.dumps(PROPOSAL)

    result = await cli("characters", "derive", "Ophelia", "--accept")

    assert result.exit_code == 0, result.output
    assert "mbti" not in result.stdout
    assert (await character(db, "Ophelia"))[0].profile.mbti == "INFP"


async def test_derive_from_a_plain_server_takes_the_last_json_object_of_the_answer(db, tgi, tmp_path) -> None:
    await imported(db, tmp_path)
    tgi.tgi = False  # an OpenAI-style server without TGI's grammar
    tgi.reply = 'She is shy, e.g. {"not": "this"}. Result:\n' + json.dumps(PROPOSAL) + "\nDone."

    result = await cli("characters", "derive", "Ophelia", "--accept")

    assert result.exit_code == 0, result.output
    assert (await character(db, "Ophelia"))[0].profile.mbti == "ISFJ"
    (body,) = tgi.bodies("/v1/completions")  # the training layout, not streamed, unconstrained
    assert body["stream"] is False and "response_format" not in body and body["prompt"].endswith(" [/INST]")


@pytest.mark.parametrize(
    "reply, reason",
    [
        ("She seems kind and shy.", "the model's answer holds no JSON object"),
        (json.dumps({**PROPOSAL, "mbti": "XYZW"}), "MBTI 'XYZW' is not a type"),
        (json.dumps({k: v for k, v in PROPOSAL.items() if k != "style"}), "the model's proposal has no style"),
        (json.dumps({**PROPOSAL, "traits": []}), "traits needs at least one word"),
    ],
)
async def test_a_malformed_proposal_changes_nothing(db, tgi, tmp_path, reply, reason) -> None:
    before = await imported(db, tmp_path)
    tgi.reply = reply

    result = await cli("characters", "derive", "Ophelia", "--accept")

    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr.startswith("error: the model's proposal is not usable (") and reason in result.stderr
    assert result.stderr.endswith("); nothing was written\n")
    assert (await character(db, "Ophelia"))[0].card == before.card


async def test_derive_of_a_complete_card_does_not_ask_the_model(db, tgi) -> None:
    result = await cli("characters", "derive", "Hamlet", "--accept")

    assert result.exit_code == 0, result.output
    assert "already has a world, traits, MBTI and style" in result.stdout
    assert tgi.count("/v1/chat/completions") == 0


async def test_characters_edit_of_one_emotion_keeps_the_others(db) -> None:
    # Mira's baseline: happiness 7, sadness 1, disgust 0, fear 1, surprise 3, anger 0.
    result = await cli("characters", "edit", "Mira", "emotion=happiness=9")
    assert result.exit_code == 0, result.output
    mira, _ = await character(db, "Mira")
    assert mira.profile.emotion.as_dict() == {"happiness": 9, "sadness": 1, "disgust": 0, "fear": 1, "surprise": 3, "anger": 0}

    result = await cli("characters", "edit", "Mira", "emotion=sadness=4,anger=2")
    assert result.exit_code == 0, result.output
    mira, _ = await character(db, "Mira")
    assert mira.profile.emotion.as_dict() == {"happiness": 9, "sadness": 4, "disgust": 0, "fear": 1, "surprise": 3, "anger": 2}


# -- import with a model server: the missing fields are derived ---------------------------------

FOUR = ("world", "traits", "mbti", "style")
FALLBACKS = (
    "World: A noblewoman of Denmark; Traits: gentle, obedient, fragile; MBTI: not specified; Style: natural; "
    "Language: English; Emotion: happiness 0, sadness 0, disgust 0, fear 0, surprise 0, anger 0; Relationship: 3."
)
HOW_TO_FILL = "Set them with `personae characters edit 'Ophelia' field=value` or `personae characters derive 'Ophelia'`."


def derive_answers(proposal: str):
    """The double's reply: ``proposal`` to the derive request, a role-play line to anything else."""
    def answer(body) -> str:
        # A BD-RP server (the double's model) gets the raw training layout; others the chat request.
        prompt = body["inputs"] if "inputs" in body else body.get("prompt") or body["messages"][-1]["content"]
        return proposal if "expert in character analysis" in prompt else "(smiles)"

    return answer


async def test_import_with_a_model_server_stores_the_derived_fields_marked_and_an_edit_unmarks_one(db, tgi, tmp_path) -> None:
    tgi.reply = derive_answers(json.dumps(PROPOSAL))

    result = await cli("characters", "import", str(write(tmp_path, "ophelia.png", png_card())))

    assert result.exit_code == 0, result.output
    assert result.stdout == "Ophelia\n"
    assert result.stderr.splitlines() == [
        "note: Derived by the model from the card (change any with `personae characters edit 'Ophelia' field=value`): "
        "World: The Danish court at Elsinore; Traits: gentle, obedient, fragile; MBTI: ISFJ; Style: soft, hesitant.",
        "note: this card has no language, emotion, relationship yet, so the prompt uses Language: English; "
        "Emotion: happiness 0, sadness 0, disgust 0, fear 0, surprise 0, anger 0; Relationship: 3. "
        "Set them with `personae characters edit 'Ophelia' field=value`.",
    ]
    stored, avatar = await character(db, "Ophelia")
    assert {k: stored.card["data"]["extensions"]["personae"][k] for k in PROPOSAL} == PROPOSAL
    assert stored.profile.derived == FOUR and avatar is not None
    assert tgi.count("/generate") == 1  # the training layout: a BD-RP server

    shown = await cli("characters", "show", "Ophelia")
    assert shown.exit_code == 0, shown.output
    assert "\nMBTI: ISFJ (derived by the model)\n" in shown.stdout
    assert "\nWorld: The Danish court at Elsinore (derived by the model)\n" in shown.stdout
    listed = await cli("characters", "list")
    assert "Ophelia\ten\tISFJ\t(missing language,emotion,relationship; derived world,traits,mbti,style)\n" in listed.stdout

    assert (await cli("characters", "edit", "Ophelia", "mbti=INFP")).exit_code == 0
    shown = await cli("characters", "show", "Ophelia")
    assert "\nMBTI: INFP\n" in shown.stdout and "\nStyle: soft, hesitant (derived by the model)\n" in shown.stdout
    assert (await character(db, "Ophelia"))[0].profile.derived == ("world", "traits", "style")


@pytest.mark.parametrize(
    "setup, reason",
    [
        (lambda tgi, mp: setattr(tgi, "reply", "She seems kind and shy."), "the model's proposal was not usable: the model's answer holds no JSON object"),
        (lambda tgi, mp: mp.setenv("PERSONAE_LLM_URL", "http://127.0.0.1:1"), "the model server at http://127.0.0.1:1 refused the connection"),
    ],
    ids=["unusable-answer", "server-down"],
)
async def test_import_keeps_the_card_when_deriving_fails_and_says_so_in_one_line(db, tgi, tmp_path, monkeypatch, setup, reason) -> None:
    setup(tgi, monkeypatch)

    result = await cli("characters", "import", str(write(tmp_path, "ophelia.png", png_card())))

    assert result.exit_code == 0, result.output
    assert result.stdout == "Ophelia\n"
    (line,) = result.stderr.splitlines()
    assert line.startswith(
        "note: this card has no world, traits, mbti, style, language, emotion, relationship yet (deriving them failed: "
    )
    assert reason in line and f"so the prompt uses {FALLBACKS} {HOW_TO_FILL}" in line, line
    stored, _ = await character(db, "Ophelia")
    assert set(FOUR) <= set(stored.profile.missing) and stored.profile.derived == ()


async def test_import_without_a_model_server_says_what_the_prompt_uses_and_show_marks_it(db, tmp_path) -> None:
    result = await cli("characters", "import", str(write(tmp_path, "ophelia.png", png_card())))

    assert result.exit_code == 0, result.output
    assert result.stderr == (
        "note: this card has no world, traits, mbti, style, language, emotion, relationship yet, "
        f"so the prompt uses {FALLBACKS} {HOW_TO_FILL}\n"
    )
    shown = await cli("characters", "show", "Ophelia")
    assert shown.exit_code == 0, shown.output
    assert "\nMBTI: not specified (missing: the prompt uses this)\n" in shown.stdout
    assert "\nStyle: natural (missing: the prompt uses this)\n" in shown.stdout
    assert (
        "Missing profile fields: world, traits, mbti, style, language, emotion, relationship (set them with "
        "`personae characters edit 'Ophelia' field=value` or `personae characters derive 'Ophelia'`)."
    ) in shown.stdout.splitlines()


async def test_derive_accept_marks_what_it_wrote_as_derived(db, tgi, tmp_path) -> None:
    await imported(db, tmp_path)
    tgi.reply = json.dumps(PROPOSAL)

    assert (await cli("characters", "derive", "Ophelia", "--accept")).exit_code == 0

    stored, _ = await character(db, "Ophelia")
    assert stored.profile.derived == FOUR


@pytest.mark.parametrize("value, shown", [("on", "on"), ("true", "on"), ("off", "off"), ("false", "off"), (None, "off")])
async def test_show_says_whether_the_example_dialogue_is_sent(db: str, value: str | None, shown: str) -> None:
    result = await cli("characters", "show", "Hamlet", env={"PERSONAE_CARD_EXAMPLES": value})
    assert result.exit_code == 0, result.output
    assert f"Example dialogue (sent to the model: {shown}, from PERSONAE_CARD_EXAMPLES;" in result.stdout
