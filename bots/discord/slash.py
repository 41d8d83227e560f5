"""Slash commands: parse the interaction, resolve who is asking, call ``core.commands``, answer ephemerally.

Every decision (who may bind, who may create characters) is made in ``core.commands`` from the
``Actor`` resolved here for each call: admin = Manage Server (or Administrator) in the interaction's
resolved permissions, or the configured admin role; owner = an id in ``owner_ids``. The
``default_permissions`` set on some commands only hides them from others in Discord's menu.
"""

# No `from __future__ import annotations`: discord.py reads the parameter annotations below at runtime.

import logging
from typing import TYPE_CHECKING, Literal, Optional

import discord
from discord import app_commands

from bots.compose import App
from bots.settings import Settings
from core.cards import MAX_CARD_JSON_BYTES
from core.commands import Actor, Outcome, Place
from core.events import ChatEvent, Platform
from core.text import split_message

if TYPE_CHECKING:
    from bots.discord.client import PersonaeClient

log = logging.getLogger(__name__)

REPLY_LIMIT = 2000
FAILED = "Something went wrong on my side; the details are in the bot's log."
Level = app_commands.Range[int, 0, 10]


# -- who and where --------------------------------------------------------------------------


def app_of(interaction: discord.Interaction) -> App:
    client: "PersonaeClient" = interaction.client  # type: ignore[assignment]
    return client.app


def is_admin(interaction: discord.Interaction, admin_role: Optional[str]) -> bool:
    """Manage Server or Administrator in this server, or the configured role (by name or id)."""
    if interaction.guild_id is None:
        return False
    permissions = interaction.permissions
    if permissions.administrator or permissions.manage_guild:
        return True
    user = interaction.user
    if admin_role and isinstance(user, discord.Member):
        wanted = admin_role.strip()
        return any(str(role.id) == wanted or role.name == wanted for role in user.roles)
    return False


def actor_of(interaction: discord.Interaction) -> Actor:
    app = app_of(interaction)
    user_id = str(interaction.user.id)
    return Actor(
        platform=Platform.DISCORD,
        user_id=user_id,
        display_name=interaction.user.display_name,
        is_admin=is_admin(interaction, app.settings.discord_admin_role),
        is_owner=app.is_owner(Platform.DISCORD, user_id),
    )


def place_of(interaction: discord.Interaction) -> Place:
    """The channel of the interaction; in a DM, chat and channel are both the DM channel."""
    channel = interaction.channel
    channel_id = str(interaction.channel_id)
    parent = channel.parent_id if isinstance(channel, discord.Thread) else None
    private = interaction.guild_id is None
    return Place(
        platform=Platform.DISCORD,
        chat_id=channel_id if private else str(interaction.guild_id),
        channel_id=channel_id,
        private=private,
        parent_channel_id=str(parent) if parent else None,
    )


# -- answering ------------------------------------------------------------------------------


async def begin(interaction: discord.Interaction) -> None:
    """Acknowledge at once (Discord allows 3 s); the answer follows as an ephemeral follow-up."""
    await interaction.response.defer(ephemeral=True, thinking=True)


async def finish(interaction: discord.Interaction, outcome: Outcome | str) -> None:
    text = outcome if isinstance(outcome, str) else outcome.message
    for piece in split_message(text, REPLY_LIMIT):
        await interaction.followup.send(piece, ephemeral=True, allowed_mentions=discord.AllowedMentions.none())


async def character_names(interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
    """Autocomplete: the characters this person may see whose name contains what was typed."""
    outcome = await app_of(interaction).commands.list_characters(actor_of(interaction))
    typed = current.casefold()
    names = [c.name for c in outcome.characters if typed in c.name.casefold()]
    return [app_commands.Choice(name=n, value=n) for n in names[:25]]


async def no_character_hint(app: App, event: ChatEvent) -> str:
    """What a DM without a chosen character gets: how to pick one, and some names."""
    actor = Actor(Platform.DISCORD, event.user_id, event.display_name, is_owner=app.is_owner(Platform.DISCORD, event.user_id))
    names = [c.name for c in (await app.commands.list_characters(actor)).characters]
    if not names:
        return "There are no characters to talk to yet: an admin has to create one first."
    shown = ", ".join(names[:20]) + (", …" if len(names) > 20 else "")
    return f"Pick a character to talk to with `/use` (for example `/use {names[0]}`). Characters: {shown}."


class CommandTree(app_commands.CommandTree):
    """The tree that logs a failing command and tells the person briefly, instead of staying silent."""

    async def on_error(self, interaction: discord.Interaction, error: app_commands.AppCommandError) -> None:
        command = interaction.command.qualified_name if interaction.command else "?"
        log.error("slash command /%s failed", command, exc_info=error)
        try:
            if interaction.response.is_done():
                await interaction.followup.send(FAILED, ephemeral=True)
            else:
                await interaction.response.send_message(FAILED, ephemeral=True)
        except discord.HTTPException:
            pass


# -- /character -----------------------------------------------------------------------------


class CharacterCommands(app_commands.Group, name="character", description="Create, import, edit, list, show and delete characters."):
    """``/character ...``: admins manage characters; everyone may list and show the public ones."""

    @app_commands.command(name="create", description="Create a character (admins).")
    @app_commands.describe(
        name="the character's name", world="the world it lives in", traits="comma-separated, e.g. brave, curious",
        mbti="personality type, e.g. INTJ", style="comma-separated speaking style, e.g. poetic, terse",
        language="the language it speaks", scene="its default scene", greeting="what it says first",
        description="a short description", public="whether anyone may pick it in a DM (default yes)",
    )
    async def create(
        self, interaction: discord.Interaction, name: str, world: str, traits: str, mbti: str, style: str,
        language: Literal["en", "zh"] = "en", scene: Optional[str] = None, greeting: Optional[str] = None,
        description: Optional[str] = None, public: bool = True,
    ) -> None:
        await begin(interaction)
        fields = dict(name=name, world=world, traits=traits, mbti=mbti, style=style, language=language, public=public)
        fields.update({k: v for k, v in dict(scene=scene, greeting=greeting, description=description).items() if v})
        app = app_of(interaction)
        await finish(interaction, await app.commands.create_character(actor_of(interaction), place_of(interaction), fields))

    @app_commands.command(name="import", description="Import a character card (JSON file, V1/V2/V3) (admins).")
    @app_commands.describe(card="the card's .json file")
    async def import_(self, interaction: discord.Interaction, card: discord.Attachment) -> None:
        await begin(interaction)
        if card.size > MAX_CARD_JSON_BYTES:
            return await finish(interaction, f"That file is too big for a card ({card.size:,} bytes).")
        if (card.filename or "").lower().endswith((".png", ".charx")):
            return await finish(interaction, "Only JSON cards can be imported here: export the card as JSON.")
        actor, place = actor_of(interaction), place_of(interaction)
        if not actor.privileged:
            # Don't download files for people who may not import: the command layer refuses them
            # before it reads the card, so an empty card gets the same answer.
            return await finish(interaction, await app_of(interaction).commands.import_character(actor, place, b""))
        raw = await card.read()
        await finish(interaction, await app_of(interaction).commands.import_character(actor, place, raw))

    @app_commands.command(name="edit", description="Change a character's profile (admins).")
    @app_commands.autocomplete(name=character_names)
    @app_commands.describe(
        name="the character to edit", new_name="rename it", world="the world it lives in",
        traits="comma-separated, e.g. brave, curious", mbti="personality type, e.g. INTJ",
        style="comma-separated speaking style", language="the language it speaks", scene="its default scene",
        greeting="what it says first", description="a short description",
        emotion="baseline emotions, e.g. happiness=6,sadness=2", relationship="baseline intimacy 0-10",
        public="whether anyone may pick it in a DM",
    )
    async def edit(
        self, interaction: discord.Interaction, name: str, new_name: Optional[str] = None, world: Optional[str] = None,
        traits: Optional[str] = None, mbti: Optional[str] = None, style: Optional[str] = None,
        language: Optional[Literal["en", "zh"]] = None, scene: Optional[str] = None, greeting: Optional[str] = None,
        description: Optional[str] = None, emotion: Optional[str] = None, relationship: Optional[Level] = None,
        public: Optional[bool] = None,
    ) -> None:
        await begin(interaction)
        given = dict(
            name=new_name, world=world, traits=traits, mbti=mbti, style=style, language=language, scene=scene,
            greeting=greeting, description=description, emotion=emotion, relationship=relationship, public=public,
        )
        changes = {k: v for k, v in given.items() if v is not None}
        app = app_of(interaction)
        await finish(interaction, await app.commands.edit_character(actor_of(interaction), place_of(interaction), name, changes))

    @app_commands.command(name="list", description="List the characters.")
    async def list_(self, interaction: discord.Interaction) -> None:
        await begin(interaction)
        await finish(interaction, await app_of(interaction).commands.list_characters(actor_of(interaction)))

    @app_commands.command(name="show", description="Show a character's profile.")
    @app_commands.autocomplete(name=character_names)
    @app_commands.describe(name="the character to show")
    async def show(self, interaction: discord.Interaction, name: str) -> None:
        await begin(interaction)
        await finish(interaction, await app_of(interaction).commands.show_character(actor_of(interaction), name))

    @app_commands.command(name="delete", description="Delete a character and everything stored with it (admins).")
    @app_commands.autocomplete(name=character_names)
    @app_commands.describe(name="the character to delete")
    async def delete(self, interaction: discord.Interaction, name: str) -> None:
        await begin(interaction)
        app = app_of(interaction)
        await finish(interaction, await app.commands.delete_character(actor_of(interaction), place_of(interaction), name))


# -- channel and personal commands ----------------------------------------------------------


@app_commands.guild_only()
@app_commands.default_permissions(manage_guild=True)
@app_commands.autocomplete(character=character_names)
@app_commands.describe(character="who plays here", trigger="answer every message, or only mentions and replies")
async def bind(interaction: discord.Interaction, character: str, trigger: Literal["all", "mention"] = "all") -> None:
    await begin(interaction)
    app = app_of(interaction)
    await finish(interaction, await app.commands.bind(actor_of(interaction), place_of(interaction), character, trigger))


@app_commands.guild_only()
@app_commands.default_permissions(manage_guild=True)
async def unbind(interaction: discord.Interaction) -> None:
    await begin(interaction)
    await finish(interaction, await app_of(interaction).commands.unbind(actor_of(interaction), place_of(interaction)))


@app_commands.describe(text="the new scene; leave empty to go back to the character's own")
async def scene(interaction: discord.Interaction, text: Optional[str] = None) -> None:
    await begin(interaction)
    app = app_of(interaction)
    await finish(interaction, await app.commands.set_scene(actor_of(interaction), place_of(interaction), text))


@app_commands.autocomplete(character=character_names)
@app_commands.describe(character="who to talk to")
async def use(interaction: discord.Interaction, character: str) -> None:
    await begin(interaction)
    await finish(interaction, await app_of(interaction).commands.use(actor_of(interaction), place_of(interaction), character))


async def mood(interaction: discord.Interaction) -> None:
    await begin(interaction)
    await finish(interaction, await app_of(interaction).commands.mood(actor_of(interaction), place_of(interaction)))


async def reset(interaction: discord.Interaction) -> None:
    await begin(interaction)
    await finish(interaction, await app_of(interaction).commands.reset(actor_of(interaction), place_of(interaction)))


async def forget(interaction: discord.Interaction) -> None:
    await begin(interaction)
    await finish(interaction, await app_of(interaction).commands.forget(actor_of(interaction)))


_TOP_LEVEL = (
    (bind, "Bind a character to this channel (admins)."),
    (unbind, "Remove the character from this channel (admins)."),
    (scene, "Set the scene in this channel (admins; anyone in a DM)."),
    (use, "In a DM with the bot: talk to this character from now on."),
    (mood, "How the character here feels toward you."),
    (reset, "Start your conversation with the character here over."),
    (forget, "Delete everything stored about you."),
)


def build_commands() -> list[app_commands.Command | app_commands.Group]:
    """Fresh command objects for one client's tree."""
    commands: list[app_commands.Command | app_commands.Group] = [CharacterCommands()]
    for callback, description in _TOP_LEVEL:
        commands.append(app_commands.Command(name=callback.__name__, description=description, callback=callback))
    return commands


async def sync_commands(tree: app_commands.CommandTree, settings: Settings) -> None:
    """Register the commands with Discord: per guild (instant, for development), globally, or not at all."""
    mode = settings.discord_sync.strip().lower()
    if mode == "guild":
        for guild_id in settings.discord_guild_ids:
            guild = discord.Object(int(guild_id))
            tree.copy_global_to(guild=guild)
            synced = await tree.sync(guild=guild)
            log.info("synced %d slash commands to guild %s", len(synced), guild_id)
    elif mode == "global":
        synced = await tree.sync()
        log.info("synced %d slash commands globally (Discord may take a while to show changes)", len(synced))
    else:
        log.info("slash command sync is off (PERSONAE_DISCORD_SYNC=%s)", settings.discord_sync)
