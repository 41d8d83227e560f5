"""The ``personae`` command line: characters, prompts, the database, chat, the bots, the benchmark and the evaluation."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from pathlib import Path
from typing import Any, Awaitable, Callable, NoReturn, Optional, TypeVar

import click
import typer

from core.errors import InvalidInput, PersonaeError

T = TypeVar("T")

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Role-play characters with feelings, on Discord, Telegram and the terminal.")
characters_app = typer.Typer(no_args_is_help=True, help="Create, import, list, show, edit, export and delete characters.")
db_app = typer.Typer(no_args_is_help=True, help="The database schema (Alembic migrations).")
app.add_typer(characters_app, name="characters")
app.add_typer(db_app, name="db")


def fail(message: str, code: int = 1) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def fail_with(exc: BaseException) -> NoReturn:
    """Say what stopped the command in one or two lines (bots.failures decides which) and exit."""
    from bots.failures import report

    failure = report(exc)
    fail(failure.message, failure.exit_code)


def run(work: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine; whatever stops it becomes one or two lines on stderr and a non-zero exit status."""
    try:
        return asyncio.run(work())
    except (typer.Exit, typer.Abort, click.ClickException):
        raise
    except BaseException as exc:  # noqa: BLE001  (SystemExit included: nothing below calls sys.exit)
        fail_with(exc)


def settings():
    from bots.settings import Settings

    try:
        return Settings()
    except Exception as exc:  # pydantic's ValidationError: bots.failures names the variable
        fail_with(exc)


# -- logging and the options every command takes ----------------------------------------------

OWN_LOGGERS = ("personae", "bots", "core", "storage")
_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_chosen = {"verbose": False, "debug": False}  # from the options before the command name
_log_format = {"format": "text"}


class _OneLineFormatter(logging.Formatter):
    """A failure logged with its traceback reads as one line, the exception's kind and first line at
    its end; ``--debug`` shows the whole traceback."""

    full_tracebacks = False

    def format(self, record: logging.LogRecord) -> str:
        if self.full_tracebacks or not record.exc_info:
            return super().format(record)
        error = record.exc_info[1]
        saved = record.exc_info, record.exc_text
        record.exc_info, record.exc_text = None, None
        try:
            line = super().format(record)
        finally:
            record.exc_info, record.exc_text = saved
        if error is not None:
            first = (str(error).strip().splitlines() or [""])[0][:300]
            line += f" [{type(error).__name__}{': ' + first if first else ''}; --debug shows the traceback]"
        return line


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time (a test runner may swap it between commands)."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(_formatter())

    @property  # type: ignore[override]
    def stream(self):  # noqa: ANN201
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:  # noqa: ANN001
        pass


def _formatter() -> logging.Formatter:
    if _log_format["format"] == "json":
        from bots.logs import JsonFormatter

        return JsonFormatter()
    return _OneLineFormatter(_LOG_FORMAT)


def setup_logging(
    verbose: bool = False, debug: bool = False, *, default: int = logging.WARNING, log_format: str | None = None,
    message_text: bool | None = None,
) -> None:
    """``debug``: everything at DEBUG; ``verbose``: personae's own INFO lines, libraries at WARNING;
    else personae's lines at ``default`` (INFO for ``run``) and libraries at WARNING.
    ``log_format``: ``text`` (one line each) or ``json`` (PERSONAE_LOG_FORMAT); ``message_text``:
    whether lines may quote what people wrote (PERSONAE_LOG_MESSAGE_TEXT)."""
    verbose = verbose or _chosen["verbose"]
    debug = debug or _chosen["debug"]
    root = logging.getLogger()
    if log_format is not None:
        _log_format["format"] = log_format
    if message_text is not None:
        from core import observe

        observe.message_text_in_logs = message_text
    handlers = [h for h in root.handlers if isinstance(h, _StderrHandler)]
    if not handlers:
        root.addHandler(_StderrHandler())
    else:
        for handler in handlers:
            handler.setFormatter(_formatter())
    from bots.logs import JsonFormatter

    _OneLineFormatter.full_tracebacks = debug
    JsonFormatter.full_tracebacks = debug
    root.setLevel(logging.DEBUG if debug else logging.WARNING)
    own = logging.DEBUG if debug else (min(logging.INFO, default) if verbose else default)
    if own == root.level:
        own = logging.NOTSET  # the same as inheriting, and leaves nothing behind for the next command in a process
    for name in OWN_LOGGERS:
        logging.getLogger(name).setLevel(own)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"personae {package_version()}")
        raise typer.Exit()


def package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("personae")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


@app.callback()
def options(
    version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True, help="Print the version and exit."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show personae's INFO lines (libraries stay quiet)."),
    debug: bool = typer.Option(False, "--debug", help="Show everything at DEBUG, libraries included, and tracebacks."),
) -> None:
    """Role-play characters with feelings, on Discord, Telegram and the terminal."""
    _chosen.update(verbose=verbose, debug=debug)
    setup_logging()


# -- database ---------------------------------------------------------------------------------


@db_app.command("upgrade")
def db_upgrade(revision: str = typer.Argument("head", help="Target revision.")) -> None:
    """Create or update the database schema."""
    from storage.migrate import current, upgrade

    s = settings()

    async def work() -> None:
        await upgrade(s.database_url, revision)
        typer.echo(f"database at revision {await current(s.database_url)}")

    run(work)


@db_app.command("downgrade")
def db_downgrade(revision: str = typer.Argument(..., help="Target revision, e.g. base.")) -> None:
    """Take the schema back to an earlier revision."""
    from storage.migrate import current, downgrade

    s = settings()

    async def work() -> None:
        await downgrade(s.database_url, revision)
        typer.echo(f"database at revision {await current(s.database_url)}")

    run(work)


# -- characters -------------------------------------------------------------------------------


async def _with_commands(work: Callable[[Any], Awaitable[T]], *, derive: bool = False) -> T:
    """Open the store and cache and run ``work(commands)`` with the samples present.

    With ``derive`` and PERSONAE_LLM_URL set, the commands get a client for that model server (an
    import asks it for the fields a card lacks); it is not probed first: a server that is down
    leaves the import done with a note. The bundled model is never started here.
    """
    from bots.compose import command_layer, model_pool, open_cache, open_store
    from bots.samples import ensure_samples
    from core.hot import HotState

    s = settings()
    store = await open_store(s)
    cache = await open_cache(s)
    model = model_pool(s, s.llm_url) if derive and s.llm_url is not None else None
    try:
        await ensure_samples(store)
        commands = command_layer(s, store, cache, HotState(store, cache, ttl_s=s.cache_ttl_s), model)
        return await work(commands)
    finally:
        if model is not None:
            await model.close()
        await cache.close()
        await store.close()


def _cli_actor():
    from core.commands import Actor

    # Whoever runs the command line on the server is an owner.
    return Actor(platform="console", user_id="cli", display_name="cli", is_owner=True)


def _outcome(outcome) -> None:
    if not outcome.ok:
        fail(outcome.message)
    typer.echo(outcome.message)


def _read_card_bytes(file: Path, limit: int) -> bytes:
    """A card file's bytes; its size is checked before it is read."""
    try:
        size = file.stat().st_size
        if size > limit:
            fail(f"{file} is {size:,} bytes; the limit is {limit:,} (PERSONAE_MAX_CARD_BYTES)")
        if not file.is_file():
            fail(f"{file} is not a file")
        return file.read_bytes()
    except OSError as exc:
        fail(f"cannot read {file}: {exc.strerror}")
    raise AssertionError("unreachable")


def _missing_note(missing: tuple[str, ...]) -> str:
    return f"note: this card has no {', '.join(missing)}: the prompt uses fallbacks"


CLI_EDIT = "`personae characters edit NAME field=value`"


@characters_app.command("import")
def characters_import(file: Path = typer.Argument(..., help="A Character Card: PNG, CharX (.charx) or JSON (V1/V2/V3).")) -> None:
    """Import a character card (and the avatar a PNG or CharX carries); print the imported name.

    With PERSONAE_LLM_URL set, the model proposes the world, traits, MBTI and style the card lacks
    (stored marked as derived); notes about the profile go to stderr.
    """
    from core.commands import derive_command
    from core.profile_notes import derived_note, missing_note

    raw = _read_card_bytes(file, settings().max_card_bytes)

    async def work(commands):
        outcome = await commands.import_character(_cli_actor(), None, raw, file.name)
        if not outcome.ok:
            fail(outcome.message)
        character = outcome.character
        typer.echo(character.name)
        edit = CLI_EDIT.replace("NAME", repr(character.name))
        if outcome.derived:
            typer.echo(f"note: {derived_note(character.profile, outcome.derived, edit=edit)}", err=True)
        if character.profile.missing:
            note = missing_note(
                character.profile, edit=edit, derive=derive_command(character.name), failed=outcome.derive_failed, subject="this card"
            )
            typer.echo(f"note: {note}", err=True)

    run(lambda: _with_commands(work, derive=True))


@characters_app.command("list")
def characters_list() -> None:
    """List every character."""

    async def work(commands):
        outcome = await commands.list_characters(_cli_actor())
        for c in outcome.characters:
            flags = [] if c.public else ["private"]
            if c.profile.missing:
                flags.append("missing " + ",".join(c.profile.missing))
            if c.profile.derived:
                flags.append("derived " + ",".join(c.profile.derived))
            typer.echo(f"{c.name}\t{c.profile.language}\t{c.profile.mbti or '-'}" + (f"\t({'; '.join(flags)})" if flags else ""))
        if not outcome.characters:
            typer.echo(outcome.message)

    run(lambda: _with_commands(work))


@characters_app.command("show")
def characters_show(name: str) -> None:
    """Show a character's profile."""
    from core.commands import describe

    async def work(commands):
        outcome = await commands.show_character(_cli_actor(), name)
        if not outcome.ok:
            fail(outcome.message)
        edit = CLI_EDIT.replace("NAME", repr(outcome.character.name))
        typer.echo(describe(outcome.character, edit=edit, card_examples=commands.card_examples))

    run(lambda: _with_commands(work))


async def _async_outcome(awaitable) -> None:
    _outcome(await awaitable)


@characters_app.command("export")
def characters_export(
    name: str,
    format: str = typer.Option("json", "--format", "-f", help="json, png (the card inside the avatar image) or charx."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="Write here (needed for png and charx; json goes to stdout without it)."),
) -> None:
    """Export a character's card (unknown fields and extensions kept), with its avatar for png and charx."""
    from core.card_files import EXPORT_FORMATS, avatar_png, export_card

    fmt = format.strip().lower()
    if fmt not in EXPORT_FORMATS:
        fail(f"unknown format {format!r}; supported: {', '.join(EXPORT_FORMATS)}")
    if fmt != "json" and output is None:
        fail(f"a {fmt.upper()} file is binary: give a file to write it to with -o FILE")

    async def work(commands):
        outcome = await commands.show_character(_cli_actor(), name)
        if not outcome.ok:
            fail(outcome.message)
        avatar = None
        if fmt != "json":
            stored = await commands.character_avatar(outcome.character)
            if stored is not None:
                avatar = avatar_png(stored[0])
                if avatar is None:
                    typer.echo(f"note: the stored avatar ({stored[1]}) cannot be read as an image; the placeholder is used", err=True)
        data = export_card(outcome.character.card, avatar, fmt)
        if output is None:
            sys.stdout.write(data.decode("utf-8"))
            return
        try:
            output.write_bytes(data)
        except OSError as exc:
            fail(f"cannot write {output}: {exc.strerror}")
        typer.echo(f"wrote {output}", err=True)

    run(lambda: _with_commands(work))


@characters_app.command("edit")
def characters_edit(name: str, changes: list[str] = typer.Argument(..., help="field=value, e.g. mbti=INTJ traits=calm,wry")) -> None:
    """Change profile fields (world, traits, mbti, style, language, scene, greeting, emotion, relationship, public, name,
    examples=on|off|default: whether the card's example dialogue goes to the model)."""
    parsed: dict[str, str] = {}
    for change in changes:
        key, sep, value = change.partition("=")
        if not sep:
            fail(f"expected field=value, got {change!r}")
        parsed[key.strip()] = value
    run(lambda: _with_commands(lambda c: _async_outcome(c.edit_character(_cli_actor(), None, name, parsed))))


@characters_app.command("derive")
def characters_derive(
    name: str,
    accept: bool = typer.Option(False, "--accept", help="Write the proposal without asking."),
) -> None:
    """Ask the model to propose the world, traits, MBTI and style a card lacks, from its description and dialogue."""
    from bots.compose import open_model
    from core import derive

    s = settings()

    async def look(commands):
        outcome = await commands.show_character(_cli_actor(), name)
        if not outcome.ok:
            fail(outcome.message)
        return outcome.character

    character = run(lambda: _with_commands(look))
    wanted = [f for f in derive.DERIVED_FIELDS if f in character.profile.missing]
    if not wanted:
        typer.echo(f"{character.name} already has a world, traits, MBTI and style; change them with `personae characters edit`.")
        return

    async def ask():
        async with open_model(s) as model:
            try:
                return await derive.propose_profile(model, character.card)
            except InvalidInput as exc:
                fail(f"the model's proposal is not usable ({exc}); nothing was written")

    proposal = run(ask)
    try:
        changes = derive.changes_to_apply(character.card, proposal)
    except InvalidInput as exc:
        fail(f"the model's proposal is not usable ({exc}); nothing was written")
    typer.echo(f"Proposed for {character.name}:")
    typer.echo(derive.describe_proposal(changes))
    if not accept:
        if not sys.stdin.isatty():
            typer.echo("not written: run again with --accept to write it", err=True)
            return
        if not typer.confirm("Write these fields?", default=False):
            typer.echo("not written", err=True)
            return
    run(lambda: _with_commands(lambda c: _async_outcome(c.edit_character(_cli_actor(), None, character.name, changes, derived=True))))


@characters_app.command("delete")
def characters_delete(name: str) -> None:
    """Delete a character and everything stored with it."""
    run(lambda: _with_commands(lambda c: _async_outcome(c.delete_character(_cli_actor(), None, name))))


# -- prompt -----------------------------------------------------------------------------------


@app.command("prompt")
def prompt(
    card_file: Optional[Path] = typer.Argument(None, help="A character card: PNG, CharX or JSON (not with --channel)."),
    user: str = typer.Option(
        ..., "--user",
        help="The name of the person the character talks to (with --channel: their user id there, or a name seen there).",
    ),
    channel: Optional[str] = typer.Option(
        None, "--channel",
        help="PLATFORM:CHANNEL, e.g. telegram:-1001234: the next message in that stored channel, as the bots would answer it "
        "(its characters, the person's state and history, the scene around them; from the database).",
    ),
    character: Optional[str] = typer.Option(None, "--character", help="With --channel: the character that answers (default: as the bots pick)."),
    scene: Optional[str] = typer.Option(None, "--scene", help="The scene (default: the card's scenario)."),
    emotion: Optional[str] = typer.Option(None, "--emotion", help="e.g. happiness=1,sadness=8,disgust=5,fear=7,surprise=6,anger=4"),
    relationship: Optional[int] = typer.Option(None, "--relationship", help="Intimacy 0-10 (default: the card's)."),
    history: Optional[Path] = typer.Option(
        None, "--history",
        help='JSON list of {"role", "content"} turns from the start of the conversation (a greeting first, as shown). '
        "Without it, --message is a first message: the card's greeting comes before it, as the bots send it.",
    ),
    message: Optional[str] = typer.Option(None, "--message", help="The new user message to end with."),
    message_file: Optional[Path] = typer.Option(None, "--message-file", help="Read the new user message from FILE (- for stdin)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object {\"messages\": [...]} (with --raw: {\"prompt\": \"...\"})."),
    raw: bool = typer.Option(False, "--raw", help="Print the training layout's exact string (what a BD-RP server gets)."),
    memory: Optional[list[str]] = typer.Option(
        None, "--memory",
        help="A memory the character keeps of the person (repeat for several); those relevant to --message go into the "
        "scene within PERSONAE_MEMORY_PROMPT_TOKENS, as the bots add them.",
    ),
) -> None:
    """Print exactly what would go to the model server, built by the engine's own function (no database or
    model needed; with --channel, read from the database)."""
    if channel is not None:
        if card_file is not None:
            fail("give a card file or --channel PLATFORM:CHANNEL, not both")
        _channel_prompt(channel, user, character, message, message_file, as_json, raw)
        return
    if card_file is None:
        fail("give a character card file, or --channel PLATFORM:CHANNEL for a stored channel")
    if character is not None:
        fail("--character goes with --channel; a card file is the character")
    from core.card_dialogue import greeting_options
    from core.card_files import MAX_FILE_BYTES, read_card_file
    from core.cards import examples_switch, profile_from_card
    from core.emotions import check_level, parse_emotion_pairs
    from bots.compose import lore_settings
    from core.model_input import history_window, model_messages
    from core.prompt import Turn, estimate_tokens
    from core.text import display_name, message_text

    s = settings()
    raw_bytes = _read_card_bytes(card_file, MAX_FILE_BYTES)
    notes: list[str] = []
    # The engine's own intake: the name and the message cleaned as a platform's are.
    user = display_name(user)
    try:
        if not user.strip():
            raise InvalidInput("--user is empty: give the name of the person the character talks to")
        message = _prompt_message(message, message_file, s.max_message_chars, notes)
        text = message_text(message) if message is not None else ""
        card = read_card_file(raw_bytes, card_file.name).card
        profile = profile_from_card(card)
        # The emotions named change the card's baseline; the others keep it.
        state = profile.emotion.with_changes(parse_emotion_pairs(emotion)) if emotion is not None else None
        level = check_level("relationship", relationship) if relationship is not None else None
        # The engine's window: the last PERSONAE_HISTORY_TURNS turns; a leading reply is the greeting
        # only when they reach the conversation's start.
        turns, from_start = history_window(_read_history(history) if history is not None else [], s.history_turns)
        if not turns and message is not None:
            # First contact: the bots show the card's greeting, and the model sees it (the engine's rule).
            options = greeting_options(card, profile.greeting, char=profile.name, user=user)
            if options:
                turns = [Turn("assistant", options[0], estimate_tokens(options[0]))]
            if len(options) > 1:
                notes.append("note: the bots pick the greeting at random among first_mes and alternate_greetings; this shows the first")
        _refuse_a_prefill(turns, message)
        switch = examples_switch(card)
        inputs = dict(
            user=user, text=text, history=turns, scene=scene, emotion=state, intimacy=level, from_start=from_start,
            examples=card["data"].get("mes_example") or "", use_examples=s.card_examples if switch is None else switch,
            lore=lore_settings(s),
            memories=_prompt_memories(memory or [], text, s.memory_prompt_tokens, notes),
        )
        messages = model_messages(profile, **inputs)
        budget = s.max_input_tokens - s.max_tokens
        if sum(estimate_tokens(m["content"]) for m in messages) > budget:
            # The engine counts exactly with the model server here; this counts by the (higher) estimate.
            messages = model_messages(profile, **inputs, budget=budget, count=estimate_tokens)
            notes.append(f"note: over the estimated budget of {budget} tokens; old turns left out by estimate")
    except OSError as exc:
        fail(f"cannot read {exc.filename}: {exc.strerror}")
    except PersonaeError as exc:
        fail(str(exc))
    if profile.missing:
        notes.append(_missing_note(profile.missing))
    _print_prompt(s, messages, notes, as_json, raw)


def _channel_prompt(
    channel: str, user: str, character: Optional[str], message: Optional[str], message_file: Optional[Path], as_json: bool, raw: bool
) -> None:
    """``personae prompt --channel``: the next message in a stored channel, through the engine's own turn steps."""
    from core.events import Platform

    platform, sep, channel_id = channel.partition(":")
    platform, channel_id = platform.strip().lower(), channel_id.strip()
    if not sep or not channel_id or platform not in {p.value for p in Platform}:
        fail(f"--channel must be PLATFORM:CHANNEL with PLATFORM one of {', '.join(p.value for p in Platform)} "
             f"(e.g. telegram:-1001234), not {channel!r}")
    s = settings()
    notes: list[str] = []
    try:
        text = _prompt_message(message, message_file, s.max_message_chars, notes)
    except OSError as exc:
        fail(f"cannot read {exc.filename}: {exc.strerror}")
    except PersonaeError as exc:
        fail(str(exc))
    if text is None:
        fail("--channel needs the next message: give it with --message (or --message-file)")
    messages, more = run(lambda: _channel_messages(s, Platform(platform), channel_id, user, character, text))
    _print_prompt(s, messages, [*notes, *more], as_json, raw)


async def _channel_messages(s, platform, channel_id: str, user: str, character: Optional[str], text: str):
    from bots.compose import engine_config, open_store
    from core.engine import Engine
    from core.events import ChatEvent
    from core.preview import EstimatingModel, next_turn
    from core.text import display_name, message_text
    from storage.cache_memory import MemoryCache

    store = await open_store(s)
    cache = MemoryCache()
    try:
        engine = Engine(store, cache, EstimatingModel(), engine_config(s))
        user = display_name(user)
        if not user.strip():
            raise InvalidInput("--user is empty: give the person's user id in that channel, or their name")
        user_id, name, known = user, user, False
        for line in reversed(await store.messages.channel_lines(platform, channel_id, limit=500)):
            if line.role == "user" and (line.user_id == user or (line.display_name or "").casefold() == user.casefold()):
                user_id, name, known = line.user_id, line.display_name or user, True
                break
        cast = await engine.cast_for(ChatEvent(platform, "", channel_id, user_id, name, "-", "-"))
        private = bool(cast) and cast[0].private
        event = ChatEvent(platform, "", channel_id, user_id, name, "-", message_text(text), private=private)
        preview = await next_turn(engine, event, character_name=character)
        notes = list(preview.notes)
        if not known:
            notes.insert(0, f"note: {user!r} has not written in {platform}:{channel_id}; shown as a new person")
        return preview.messages, notes
    finally:
        await cache.close()
        await store.close()


def _print_prompt(s, messages, notes: list[str], as_json: bool, raw: bool) -> None:
    """Print messages as ``personae prompt`` does (notes on standard error)."""
    from bots.llm import dialects
    from core.model_input import chat_payload, render_mistral_raw

    if s.prompt_layout == "auto" and not s.llm_model:
        notes.append("layout: auto: training (--raw) if the server's model names BD-RP, chat (--json) otherwise; the server is not asked here")
    else:
        layout, why = dialects.choose_layout(s.prompt_layout, None, s.llm_model)
        notes.append(f"layout: {layout} ({why})")
        if (layout == "training") != raw:
            notes.append(_LAYOUT_MISMATCH[layout])
    for note in notes:
        typer.echo(note, err=True)
    if raw:
        text = render_mistral_raw(messages, bos="")
        typer.echo(json.dumps({"prompt": text}, ensure_ascii=False) if as_json else text, nl=as_json)
    elif as_json:
        # Exactly as the chat request carries them (control strings neutralised, as the engine sends them).
        typer.echo(json.dumps({"messages": chat_payload(messages)}, ensure_ascii=False))
    else:
        for m in chat_payload(messages):
            typer.echo(f"--- {m['role']} ---\n{m['content']}")


_LAYOUT_MISMATCH = {
    "training": "note: the configured server gets the training layout, not this one: add --raw to see it",
    "chat": "note: the configured server gets the chat layout (messages), not this string: leave out --raw to see it",
}


def _prompt_memories(memories: list[str], text: str, budget: int, notes: list[str]) -> list[str]:
    """The --memory texts the engine would put into the scene for ``text`` (``core.memory.select``)."""
    import datetime as dt

    from core.memory import MAX_MEMORY_CHARS, Memory, select
    from core.prompt import estimate_tokens
    from core.text import clean_text, one_line

    kept = []
    for number, given in enumerate(memories, 1):
        cleaned = one_line(clean_text(given)).strip()
        if not cleaned:
            raise InvalidInput(f"--memory number {number} is empty: give the text of a memory")
        if len(cleaned) > MAX_MEMORY_CHARS:
            raise InvalidInput(f"--memory number {number} is {len(cleaned)} characters; a memory is at most {MAX_MEMORY_CHARS}")
        kept.append(Memory(number, "fact", cleaned, 0, 0, estimate_tokens(cleaned), dt.datetime.now(dt.UTC)))
    chosen = select(kept, text, budget)
    if len(chosen) < len(kept):
        notes.append(f"note: {len(kept) - len(chosen)} of {len(kept)} memories left out (PERSONAE_MEMORY_PROMPT_TOKENS={budget})")
    return [m.text for m in chosen]


def _prompt_message(message: str | None, message_file: Path | None, limit: int, notes: list[str]) -> str | None:
    """The new user message from --message or --message-file (``-``: stdin); a note when the bots would refuse it."""
    if message_file is not None:
        if message is not None:
            raise InvalidInput("give the message with --message or --message-file, not both")
        message = sys.stdin.read() if str(message_file) == "-" else message_file.read_text(encoding="utf-8", errors="replace")
    if message is not None and not message.strip():
        raise InvalidInput("the message is empty; the bots answer no empty message: give one with --message or leave it out")
    if message is not None and len(message) > limit:
        notes.append(
            f"note: the message is {len(message):,} characters; the bots would refuse it "
            f"(over PERSONAE_MAX_MESSAGE_CHARS={limit:,}) and send nothing to the model"
        )
    return message


def _refuse_a_prefill(turns, message: str | None) -> None:
    if message is None and turns and turns[-1].role == "user":
        raise InvalidInput(
            "the history ends with a user turn and there is no --message: the bots always end with the new "
            "message; put the last user turn in --message (or --message-file)"
        )


def _read_history(path: Path):
    from core.errors import InvalidInput
    from core.prompt import Turn

    try:
        items = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"{path} is not JSON: {exc}") from None
    if not isinstance(items, list):
        raise InvalidInput(f"{path} must hold a JSON list of {{\"role\", \"content\"}} objects")
    turns = []
    for i, item in enumerate(items):
        if not isinstance(item, dict) or item.get("role") not in ("user", "assistant") or not isinstance(item.get("content"), str):
            raise InvalidInput(f"{path}: item {i} must be {{\"role\": \"user\"|\"assistant\", \"content\": text}}")
        turns.append(Turn(item["role"], item["content"]))
    return turns


# -- a person's state -------------------------------------------------------------------------


@app.command("state")
def state(
    character: str = typer.Argument(..., help="The character's name."),
    user: str = typer.Option(..., "--user", help="Whose: PLATFORM:ID, e.g. discord:123456789 or telegram:42."),
    changes: int = typer.Option(10, "--changes", min=0, help="How many recent changes to list."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Show a character's emotions and intimacy toward one person (now, as stored, and the baseline), the recent changes, and its memories of them."""
    from bots.compose import dynamics, open_store
    from core.events import PersonKey, Platform

    platform, sep, user_id = user.partition(":")
    platform, user_id = platform.strip().lower(), user_id.strip()
    if not sep or not user_id or platform not in {p.value for p in Platform}:
        fail(f"--user must be PLATFORM:ID with PLATFORM one of {', '.join(p.value for p in Platform)} (e.g. discord:123456789), not {user!r}")
    s = settings()

    async def work() -> None:
        store = await open_store(s)
        try:
            found = await store.characters.get_by_name(character)
            if found is None:
                fail(f"there is no character called {character!r}")
            key = PersonKey(found.id, platform, user_id)
            stored = await store.relationships.get(key)
            if stored is None:
                fail(f"{found.name} has no state toward {platform}:{user_id}: they have not talked (or it was forgotten)")
            rows = await store.relationships.changes(key, limit=changes)
            memories = await store.memories.of_person(found.id, platform, user_id)
        finally:
            await store.close()
        now = dynamics(s).as_of_now(stored, found.profile.emotion)
        levels = lambda st: {**st.emotion.as_dict(), "intimacy": st.intimacy}  # noqa: E731
        baseline = {**found.profile.emotion.as_dict(), "intimacy": found.profile.relationship}
        if as_json:
            typer.echo(json.dumps({
                "character": found.name, "platform": platform, "user_id": user_id, "version": stored.version,
                "updated_at": stored.updated_at.isoformat(), "now": levels(now), "stored": levels(stored), "baseline": baseline,
                "changes": [
                    {"version": r.after.version, "appraiser": r.appraiser, "message_id": r.message_id, "reason": r.reason,
                     "before": levels(r.before), "after": levels(r.after)}
                    for r in rows
                ],
                "memories": {
                    channel: [
                        {"number": n, "id": m.id, "kind": m.kind, "text": m.text, "created_at": m.created_at.isoformat(),
                         "seq": [m.seq_from, m.seq_to]}
                        for n, m in enumerate(kept, 1)
                    ]
                    for channel, kept in memories.items()
                },
            }, ensure_ascii=False))
            return
        typer.echo(f"{found.name} toward {platform}:{user_id} (version {stored.version}, written {stored.updated_at:%Y-%m-%d %H:%M} UTC)")
        typer.echo(f"{'':10} {'now':>4} {'stored':>7} {'baseline':>9}")
        for name, value in levels(now).items():
            typer.echo(f"{name:10} {value:>4} {levels(stored)[name]:>7} {baseline[name]:>9}  {'█' * value}{'·' * (10 - value)}")
        if rows:
            typer.echo("Recent changes, newest first:")
        for r in rows:
            typer.echo(f"  v{r.after.version} {r.appraiser} (message {r.message_id}): {r.reason}")
        for channel, kept in memories.items():
            typer.echo(f"Memories in channel {channel} (the person's /memory numbers):")
            for n, m in enumerate(kept, 1):
                typer.echo(f"  {n}. {m.text} ({m.kind}, {m.created_at:%Y-%m-%d}, turns {m.seq_from}-{m.seq_to})")

    run(work)


# -- chat, bots, benchmark --------------------------------------------------------------------


@app.command("chat")
def chat(
    character: Optional[str] = typer.Option(None, "--character", "-c", help="Start with this character."),
    user: str = typer.Option("You", "--user", "-u", help="Your name in the story."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show personae's INFO lines."),
    debug: bool = typer.Option(False, "--debug", help="Show everything at DEBUG."),
) -> None:
    """Role-play in the terminal (the embedded model when PERSONAE_LLM_URL is unset)."""
    # Warnings would land in the middle of the story; what the person must know is said in the chat.
    setup_logging(verbose, debug, default=logging.ERROR)
    s = settings()  # a bad setting is said before the chat's modules are imported
    from bots.console.chat import run_console

    run(lambda: run_console(s, character=character, user=user))


@app.command("run")
def run_bots(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show personae's INFO lines (the default here)."),
    debug: bool = typer.Option(False, "--debug", help="Show everything at DEBUG."),
) -> None:
    """Run the Discord and/or Telegram bots (whichever tokens are set)."""
    # A service says what it connected to and when it is up: personae's INFO lines show by default.
    s = settings()  # a bad setting is said before the service's modules are imported
    setup_logging(verbose, debug, default=logging.INFO, log_format=s.log_format, message_text=s.log_message_text)
    from bots.service import run_service

    run(lambda: run_service(s))


@app.command("health")
def health(max_age: float = typer.Option(30.0, "--max-age", min=1, help="Seconds a heartbeat stays fresh.")) -> None:
    """Exit 0 if `personae run` is connected to every platform (its heartbeat is fresh), else 1."""
    from bots import heartbeat

    path = settings().heartbeat_file
    age = heartbeat.age(path)
    if age is None:
        fail(f"no heartbeat at {path}: `personae run` is not running or not connected yet (PERSONAE_HEARTBEAT_FILE)")
    if age > max_age:
        fail(f"the last heartbeat is {age:.0f} s old: `personae run` is stuck or lost its platform connection")
    typer.echo(f"healthy: heartbeat {age:.0f} s old")


@app.command("bench")
def bench(
    users: int = typer.Option(200, "--users", min=1),
    turns: int = typer.Option(5, "--turns", min=1),
    as_json: bool = typer.Option(False, "--json", help="End with one JSON line of the figures."),
    processes: Optional[int] = typer.Option(
        None, "--processes", min=1,
        help="Run N engine processes on the shared PostgreSQL and Redis against one model server; print turns/s and admission costs.",
    ),
    token_delay: float = typer.Option(0.0, "--token-delay", min=0, help="With --processes: seconds between the model server's stream events."),
    worker_of: Optional[str] = typer.Option(None, "--worker-of", hidden=True),
    worker_index: int = typer.Option(0, "--worker-index", hidden=True),
    platform: Optional[str] = typer.Option(
        None, "--platform",
        help="discord or telegram: people in one room of the real adapter against the local fake platform (its rate limits enforced); "
        "prints first-text and whole-reply times, writes per turn, replies/s and 429s.",
    ),
    people: Optional[list[int]] = typer.Option(None, "--people", min=1, help="With --platform: people in the room (repeat for several runs; default 1, 5 and 20)."),
    seconds: float = typer.Option(120.0, "--seconds", min=1, help="With --platform: how long each run lasts."),
    saturate: bool = typer.Option(False, "--saturate", help="With --platform: people write again as soon as their reply is complete."),
) -> None:
    """Drive simulated people through the Engine against an instant model server and print figures."""
    if platform is not None:
        if platform not in ("discord", "telegram"):
            fail(f"--platform must be discord or telegram, not {platform!r}")
        from bots.bench_rooms import run_room_bench

        run(lambda: run_room_bench(
            settings(), platform=platform, people=people or [1, 5, 20], seconds=seconds, saturate=saturate, as_json=as_json
        ))
        return
    if worker_of is not None:  # one of the children of `personae bench --processes N`
        from bots.bench_processes import run_worker

        run(lambda: run_worker(settings(), worker_of, index=worker_index, users=users, turns=turns))
        return
    if processes is not None:
        from bots.bench_processes import run_processes

        run(lambda: run_processes(
            settings(), processes=processes, users=users, turns=turns, token_delay=token_delay, as_json=as_json
        ))
        return
    from bots.bench import run_bench

    run(lambda: run_bench(settings(), users=users, turns=turns, as_json=as_json))


@app.command("appraisal-check")
def appraisal_check(n: int = typer.Option(120, "--n", min=2, help="Exchanges to appraise.")) -> None:
    """Send varied exchanges through the model appraiser against a test server that answers like the
    BeyondDialogue alignment data; print how many answers were read. Exit 1 below 95%."""
    from bots.appraisal_check import run_check

    logging.getLogger("core.appraisal").setLevel(logging.ERROR)  # the unreadable shapes are meant to fail
    s = settings()
    result = run(lambda: run_check(n, settings=s))
    typer.echo(result.table())
    if not result.ok:
        raise typer.Exit(1)


@app.command("doctor")
def doctor() -> None:
    """Check the configuration end to end (database, cache, model server) and print a table; exit 1 if a line fails."""
    s = settings()
    from bots.doctor import run_doctor

    if not run(lambda: run_doctor(s, echo=typer.echo)):
        raise typer.Exit(1)
@app.command("eval")
def evaluate(
    role_files: list[Path] = typer.Argument(None, help="AutoRPEval role files (JSON); default: the bundled role set."),
    character: list[str] = typer.Option([], "--character", "-c", help="Evaluate a stored character (repeatable)."),
    out: Path = typer.Option(Path("eval-results"), "--out", "-o", help="Folder for results.jsonl, summary.json and chart.png."),
    turns: int = typer.Option(5, "--turns", min=1, help="Exchanges per dialogue (AutoRPEval: 5)."),
    samples: int = typer.Option(1, "--samples", min=1, help="Dialogues per scene."),
    chats: Optional[int] = typer.Option(None, "--chats", min=1, help="Scenes per role (default: all)."),
    partner_max_tokens: int = typer.Option(64, "--partner-max-tokens", min=1),
    judge_max_tokens: int = typer.Option(768, "--judge-max-tokens", min=1, help="The judge reasons before its JSON: give it room."),
    fresh: bool = typer.Option(False, "--fresh", help="Forget earlier results in --out instead of resuming."),
    recorded: bool = typer.Option(False, "--recorded", help="Judge the dialogues recorded in the role files instead of playing new ones."),
    reappraise: bool = typer.Option(
        False, "--reappraise",
        help="Only appraise again the dialogues already done in --out (e.g. another PERSONAE_APPRAISER or --cadence); nothing is played or judged.",
    ),
    cadence: Optional[str] = typer.Option(
        None, "--cadence",
        help="Appraisal cadences to measure: every, every:N, moved, a comma-separated list, or all "
             "(every, every:2, every:3, moved on the same answers); default PERSONAE_APPRAISAL_CADENCE.",
    ),
    scene: str = typer.Option(
        "private", "--scene",
        help="private: the role and its partner alone; turns or slot: a scene with a second person, shown to the role "
             "in that layout (docs/scenes.md); the partner's dialogue is judged either way.",
    ),
) -> None:
    """Measure role-play quality as BeyondDialogue's AutoRPEval does (partner: PERSONAE_EVAL_PARTNER_URL, judge: PERSONAE_EVAL_JUDGE_URL)."""
    from bots.eval.command import EvalRequest, run_eval
    from bots.compose import lore_settings
    from bots.eval.run import EvalConfig

    from bots.eval.cadences import cadence_names

    from core.scene import LAYOUTS

    s = settings()
    try:
        cadences = cadence_names(cadence or s.appraisal_cadence)
    except ValueError as exc:
        fail(f"--cadence {exc}")
    if scene not in ("private", *LAYOUTS):
        fail(f"--scene must be private, {' or '.join(LAYOUTS)}, not {scene!r}")
    if scene != "private" and recorded:
        fail("--scene plays new dialogues; it does not go with --recorded")
    config = EvalConfig(
        turns=turns, samples=samples, max_tokens=s.max_tokens, temperature=s.temperature, max_input_tokens=s.max_input_tokens,
        card_examples=s.card_examples, lore=lore_settings(s), partner_max_tokens=partner_max_tokens, judge_max_tokens=judge_max_tokens,
        recorded=recorded, cadences=cadences, reappraise=reappraise, scene=scene, scene_share=s.scene_share or 0.25,
    )
    request = EvalRequest(tuple(role_files or ()), tuple(character), out, chats, fresh, config)
    typer.echo(run(lambda: run_eval(s, request, lambda line: typer.echo(line, err=True))))


def main() -> None:
    try:
        app()
    except BaseException as exc:  # noqa: BLE001  the last stop before a traceback would print
        if isinstance(exc, SystemExit):
            raise
        from bots.failures import report

        failure = report(exc)
        typer.echo(f"error: {failure.message}", err=True)
        raise SystemExit(failure.exit_code) from None


if __name__ == "__main__":
    main()
