"""The ``personae`` command line: characters, prompts, the database, chat, the bots and the benchmark."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from pathlib import Path
from typing import Any, Awaitable, Callable, Optional, TypeVar

import typer

from core.errors import PersonaeError

T = TypeVar("T")

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Role-play characters with feelings, on Discord, Telegram and the terminal.")
characters_app = typer.Typer(no_args_is_help=True, help="Create, import, list, show, edit, export and delete characters.")
db_app = typer.Typer(no_args_is_help=True, help="The database schema (Alembic migrations).")
app.add_typer(characters_app, name="characters")
app.add_typer(db_app, name="db")


def fail(message: str, code: int = 1) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def run(work: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine; a PersonaeError becomes one clear line on stderr and exit status 1."""
    try:
        return asyncio.run(work())
    except PersonaeError as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        raise typer.Exit(130)
    raise AssertionError("unreachable")


def settings():
    from bots.settings import Settings

    try:
        return Settings()
    except Exception as exc:  # pydantic's ValidationError: name the variable
        fail(f"invalid configuration: {exc}")


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for noisy in ("httpx", "httpcore", "discord.gateway", "discord.client"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


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


async def _with_commands(work: Callable[[Any], Awaitable[T]]) -> T:
    """Open the store and cache (no model server) and run ``work(app_parts)`` with the samples present."""
    from bots.compose import open_cache, open_store
    from bots.samples import ensure_samples
    from core.commands import Commands
    from core.hot import HotState

    s = settings()
    store = await open_store(s)
    cache = open_cache(s)
    try:
        await ensure_samples(store)
        commands = Commands(store, cache, HotState(store, cache, ttl_s=s.cache_ttl_s))
        return await work(commands)
    finally:
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


@characters_app.command("import")
def characters_import(file: Path = typer.Argument(..., help="A Character Card (V1/V2/V3 JSON).")) -> None:
    """Import a character card and print the imported name."""
    from core.cards import MAX_CARD_JSON_BYTES

    try:
        if file.stat().st_size > MAX_CARD_JSON_BYTES:
            fail(f"{file} is {file.stat().st_size:,} bytes; the limit is {MAX_CARD_JSON_BYTES:,}")
        raw = file.read_bytes()
    except OSError as exc:
        fail(f"cannot read {file}: {exc.strerror}")

    async def work(commands):
        outcome = await commands.import_character(_cli_actor(), None, raw)
        if not outcome.ok:
            fail(outcome.message)
        typer.echo(outcome.character.name)
        if outcome.character.profile.missing:
            typer.echo(f"note: missing profile fields: {', '.join(outcome.character.profile.missing)}", err=True)

    run(lambda: _with_commands(work))


@characters_app.command("list")
def characters_list() -> None:
    """List every character."""

    async def work(commands):
        outcome = await commands.list_characters(_cli_actor())
        for c in outcome.characters:
            flags = [] if c.public else ["private"]
            if c.profile.missing:
                flags.append("missing " + ",".join(c.profile.missing))
            typer.echo(f"{c.name}\t{c.profile.language}\t{c.profile.mbti or '-'}" + (f"\t({'; '.join(flags)})" if flags else ""))
        if not outcome.characters:
            typer.echo(outcome.message)

    run(lambda: _with_commands(work))


@characters_app.command("show")
def characters_show(name: str) -> None:
    """Show a character's profile."""
    run(lambda: _with_commands(lambda c: _async_outcome(c.show_character(_cli_actor(), name))))


async def _async_outcome(awaitable) -> None:
    _outcome(await awaitable)


@characters_app.command("export")
def characters_export(
    name: str,
    format: str = typer.Option("json", "--format", help="json"),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="Write here instead of stdout."),
) -> None:
    """Export a character's card (unknown fields and extensions kept)."""
    from core.cards import card_json

    if format != "json":
        fail(f"unknown format {format!r}; supported: json")

    async def work(commands):
        outcome = await commands.show_character(_cli_actor(), name)
        if not outcome.ok:
            fail(outcome.message)
        text = card_json(outcome.character.card)
        if output is None:
            sys.stdout.write(text)
        else:
            output.write_text(text, encoding="utf-8")
            typer.echo(f"wrote {output}", err=True)

    run(lambda: _with_commands(work))


@characters_app.command("edit")
def characters_edit(name: str, changes: list[str] = typer.Argument(..., help="field=value, e.g. mbti=INTJ traits=calm,wry")) -> None:
    """Change profile fields (world, traits, mbti, style, language, scene, greeting, emotion, relationship, public, name)."""
    parsed: dict[str, str] = {}
    for change in changes:
        key, sep, value = change.partition("=")
        if not sep:
            fail(f"expected field=value, got {change!r}")
        parsed[key.strip()] = value
    run(lambda: _with_commands(lambda c: _async_outcome(c.edit_character(_cli_actor(), None, name, parsed))))


@characters_app.command("delete")
def characters_delete(name: str) -> None:
    """Delete a character and everything stored with it."""
    run(lambda: _with_commands(lambda c: _async_outcome(c.delete_character(_cli_actor(), None, name))))


# -- prompt -----------------------------------------------------------------------------------


@app.command("prompt")
def prompt(
    card_file: Path = typer.Argument(..., help="A character card JSON file."),
    user: str = typer.Option(..., "--user", help="The name of the person the character talks to."),
    scene: Optional[str] = typer.Option(None, "--scene", help="The scene (default: the card's scenario)."),
    emotion: Optional[str] = typer.Option(None, "--emotion", help="e.g. happiness=1,sadness=8,disgust=5,fear=7,surprise=6,anger=4"),
    relationship: Optional[int] = typer.Option(None, "--relationship", help="Intimacy 0-10 (default: the card's)."),
    history: Optional[Path] = typer.Option(None, "--history", help='JSON list of {"role", "content"} turns.'),
    message: Optional[str] = typer.Option(None, "--message", help="The new user message to end with."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object {\"messages\": [...]}."),
) -> None:
    """Print exactly the chat messages that would go to the model server (no database or model needed)."""
    from core.cards import parse_card_json, profile_from_card
    from core.emotions import EmotionState, check_level
    from core.prompt import Turn, alternate, render_system_prompt

    try:
        profile = profile_from_card(parse_card_json(card_file.read_bytes()))
        state = EmotionState.parse(emotion) if emotion is not None else None
        level = check_level("relationship", relationship) if relationship is not None else None
        system = render_system_prompt(profile, chat_role=user, scene=scene, emotion=state, relationship=level)
        turns: list[Turn] = []
        if history is not None:
            turns = _read_history(history)
        if message is not None:
            turns.append(Turn("user", message))
        turns = alternate(turns)
    except OSError as exc:
        fail(f"cannot read {exc.filename}: {exc.strerror}")
    except PersonaeError as exc:
        fail(str(exc))
    messages = [{"role": "system", "content": system}] + [{"role": t.role, "content": t.content} for t in turns]
    if as_json:
        typer.echo(json.dumps({"messages": messages}, ensure_ascii=False))
    else:
        for m in messages:
            typer.echo(f"--- {m['role']} ---\n{m['content']}")


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


# -- chat, bots, benchmark --------------------------------------------------------------------


@app.command("chat")
def chat(
    character: Optional[str] = typer.Option(None, "--character", "-c", help="Start with this character."),
    user: str = typer.Option("You", "--user", "-u", help="Your name in the story."),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Role-play in the terminal (the embedded model when PERSONAE_LLM_URL is unset)."""
    from bots.console.chat import run_console

    setup_logging(verbose)
    run(lambda: run_console(settings(), character=character, user=user))


@app.command("run")
def run_bots(verbose: bool = typer.Option(False, "--verbose", "-v")) -> None:
    """Run the Discord and/or Telegram bots (whichever tokens are set)."""
    from bots.service import run_service

    setup_logging(verbose)
    logging.getLogger("personae").setLevel(logging.INFO)
    run(lambda: run_service(settings()))


@app.command("bench")
def bench(
    users: int = typer.Option(200, "--users", min=1),
    turns: int = typer.Option(5, "--turns", min=1),
    as_json: bool = typer.Option(False, "--json", help="End with one JSON line of the figures."),
) -> None:
    """Drive simulated people through the Engine against an instant model server and print figures."""
    from bots.bench import run_bench

    run(lambda: run_bench(settings(), users=users, turns=turns, as_json=as_json))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
