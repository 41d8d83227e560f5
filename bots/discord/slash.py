"""Slash commands: parse the interaction, resolve who is asking, call ``core.commands``, answer ephemerally.

Every decision (who may bind, who may create characters) is made in ``core.commands`` from the
``Actor`` resolved here for each call: admin = Manage Server (or Administrator) in the interaction's
resolved permissions, or the configured admin role; owner = an id in ``owner_ids``. The
``default_permissions`` set on some commands only hides them from others in Discord's menu.

A character's avatar is shown on ``/character show`` (the image as the thumbnail of an embed).
Chat replies go through a channel webhook under the character's name and avatar where Discord
allows it (``bots.discord.faces``); command answers are always the bot's own.
"""

# No `from __future__ import annotations`: discord.py reads the parameter annotations below at runtime.

import io
import logging
from typing import TYPE_CHECKING, Literal, Optional

import discord
from discord import app_commands

from bots.compose import App
from bots.settings import Settings
from core.commands import Actor, Outcome, Place
from core.events import ChatEvent, Platform
from core.text import clean_text, split_message

if TYPE_CHECKING:
    from bots.discord.client import PersonaeClient

log = logging.getLogger(__name__)

REPLY_LIMIT = 2000
AVATAR_KINDS = ("png", "jpg", "jpeg", "gif", "webp")  # images Discord shows in an embed
AVATAR_UPLOAD_BYTES = 8 * 1024 * 1024  # under every server's upload limit
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
        display_name=clean_text(interaction.user.display_name),
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

    @app_commands.command(name="import", description="Import a character card: PNG, CharX or JSON (V1/V2/V3) (admins).")
    @app_commands.describe(card="the card file (.png, .charx or .json)")
    async def import_(self, interaction: discord.Interaction, card: discord.Attachment) -> None:
        await begin(interaction)
        app = app_of(interaction)
        actor, place = actor_of(interaction), place_of(interaction)
        if not actor.privileged:
            # Don't download files for people who may not import: the command layer refuses them
            # before it reads the card, so an empty card gets the same answer.
            return await finish(interaction, await app.commands.import_character(actor, place, b""))
        limit = app.commands.max_card_bytes
        if card.size > limit:
            return await finish(interaction, f"That file is {card.size:,} bytes; a card may be at most {limit:,}.")
        try:
            raw = await card.read()
        except discord.HTTPException as exc:
            log.warning("could not download a card attachment: %s", exc)
            return await finish(interaction, "I could not download that file from Discord. Please try again.")
        await finish(interaction, await app.commands.import_character(actor, place, raw, card.filename))

    @app_commands.command(name="edit", description="Change a character's profile (admins).")
    @app_commands.autocomplete(name=character_names)
    @app_commands.describe(
        name="the character to edit", new_name="rename it", world="the world it lives in",
        traits="comma-separated, e.g. brave, curious", mbti="personality type, e.g. INTJ",
        style="comma-separated speaking style", language="the language it speaks", scene="its default scene",
        greeting="what it says first", description="a short description",
        emotion="baseline emotions to change, e.g. happiness=6,sadness=2 (the others stay)", relationship="baseline intimacy 0-10",
        public="whether anyone may pick it in a DM",
        examples="send the card's example dialogue to the model (default: PERSONAE_CARD_EXAMPLES)",
    )
    async def edit(
        self, interaction: discord.Interaction, name: str, new_name: Optional[str] = None, world: Optional[str] = None,
        traits: Optional[str] = None, mbti: Optional[str] = None, style: Optional[str] = None,
        language: Optional[Literal["en", "zh"]] = None, scene: Optional[str] = None, greeting: Optional[str] = None,
        description: Optional[str] = None, emotion: Optional[str] = None, relationship: Optional[Level] = None,
        public: Optional[bool] = None, examples: Optional[Literal["on", "off", "default"]] = None,
    ) -> None:
        await begin(interaction)
        given = dict(
            name=new_name, world=world, traits=traits, mbti=mbti, style=style, language=language, scene=scene,
            greeting=greeting, description=description, emotion=emotion, relationship=relationship, public=public,
            examples=examples,
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
        commands = app_of(interaction).commands
        outcome = await commands.show_character(actor_of(interaction), name)
        avatar = await commands.character_avatar(outcome.character) if outcome.ok and outcome.character else None
        if avatar is None or avatar[1] not in AVATAR_KINDS or len(avatar[0]) > AVATAR_UPLOAD_BYTES:
            return await finish(interaction, outcome)
        # The avatar rides along as an attachment, shown as the thumbnail of a small embed.
        image, ext = avatar
        filename = f"avatar.{ext}"
        embed = discord.Embed(title=outcome.character.name).set_thumbnail(url=f"attachment://{filename}")
        try:
            await interaction.followup.send(
                outcome.message[:REPLY_LIMIT], embed=embed, file=discord.File(io.BytesIO(image), filename=filename),
                ephemeral=True, allowed_mentions=discord.AllowedMentions.none(),
            )
        except discord.HTTPException as exc:  # e.g. over this server's upload limit: the text alone
            log.info("could not attach the avatar of %s: %s", outcome.character.name, exc)
            await finish(interaction, outcome)

    @app_commands.command(name="delete", description="Delete a character and everything stored with it (admins).")
    @app_commands.autocomplete(name=character_names)
    @app_commands.describe(name="the character to delete")
    async def delete(self, interaction: discord.Interaction, name: str) -> None:
        await begin(interaction)
        app = app_of(interaction)
        await finish(interaction, await app.commands.delete_character(actor_of(interaction), place_of(interaction), name))


# -- /lore ----------------------------------------------------------------------------------

Logic = Literal["and_any", "not_all", "not_any", "and_all"]
Switch = Literal["on", "off", "default"]


class LoreCommands(app_commands.Group, name="lore", description="A character's lorebook: list, show, add, edit and remove entries (admins)."):
    """``/lore ...``: the lorebook of the character playing here, or of ``character``."""

    @app_commands.command(name="list", description="The lorebook's entries, numbered.")
    @app_commands.autocomplete(character=character_names)
    @app_commands.describe(character="another character than the one here")
    async def list_(self, interaction: discord.Interaction, character: Optional[str] = None) -> None:
        await begin(interaction)
        await finish(interaction, await app_of(interaction).commands.lore_list(actor_of(interaction), place_of(interaction), character))

    @app_commands.command(name="show", description="One entry with all its fields.")
    @app_commands.autocomplete(character=character_names)
    @app_commands.describe(number="the entry's number in /lore list", character="another character than the one here")
    async def show(self, interaction: discord.Interaction, number: int, character: Optional[str] = None) -> None:
        await begin(interaction)
        commands = app_of(interaction).commands
        await finish(interaction, await commands.lore_show(actor_of(interaction), place_of(interaction), number, character))

    @app_commands.command(name="add", description="Add an entry: its keys and what it tells the model.")
    @app_commands.autocomplete(character=character_names)
    @app_commands.describe(
        keys="comma-separated keywords (or /regex/flags)", content="the text the scene gets when a key is in the recent turns",
        secondary_keys="comma-separated; with logic", logic="how the secondary keys combine (default and_any)",
        order="insertion order (default 100; higher keeps its place in the budget first)", constant="always in the scene",
        character="another character than the one here",
    )
    async def add(
        self, interaction: discord.Interaction, content: str, keys: Optional[str] = None, secondary_keys: Optional[str] = None,
        logic: Optional[Logic] = None, order: Optional[int] = None, constant: Optional[bool] = None, character: Optional[str] = None,
    ) -> None:
        await begin(interaction)
        given = dict(keys=keys, content=content, secondary_keys=secondary_keys, logic=logic, order=order, constant=constant)
        fields = {k: v for k, v in given.items() if v is not None}
        commands = app_of(interaction).commands
        await finish(interaction, await commands.lore_add(actor_of(interaction), place_of(interaction), fields, character))

    @app_commands.command(name="edit", description="Change fields of an entry; the others stay.")
    @app_commands.autocomplete(character=character_names)
    @app_commands.describe(
        number="the entry's number in /lore list", keys="comma-separated keywords (or /regex/flags)", content="the entry's text",
        secondary_keys="comma-separated", logic="how the secondary keys combine", order="insertion order",
        priority="among equal orders, the lower is dropped first", enabled="whether it can activate", constant="always in the scene",
        case_sensitive="keys match case", whole_words="keys match whole words (default on)",
        scan_depth="recent messages scanned for this entry", character="another character than the one here",
    )
    async def edit(
        self, interaction: discord.Interaction, number: int, keys: Optional[str] = None, content: Optional[str] = None,
        secondary_keys: Optional[str] = None, logic: Optional[Logic] = None, order: Optional[int] = None,
        priority: Optional[int] = None, enabled: Optional[bool] = None, constant: Optional[bool] = None,
        case_sensitive: Optional[Switch] = None, whole_words: Optional[Switch] = None,
        scan_depth: Optional[app_commands.Range[int, 0, 1000]] = None, character: Optional[str] = None,
    ) -> None:
        await begin(interaction)
        given = dict(
            keys=keys, content=content, secondary_keys=secondary_keys, logic=logic, order=order, priority=priority,
            enabled=enabled, constant=constant, case_sensitive=case_sensitive, whole_words=whole_words, scan_depth=scan_depth,
        )
        fields = {k: v for k, v in given.items() if v is not None}
        commands = app_of(interaction).commands
        await finish(interaction, await commands.lore_edit(actor_of(interaction), place_of(interaction), number, fields, character))

    @app_commands.command(name="remove", description="Remove an entry (later entries move up one).")
    @app_commands.autocomplete(character=character_names)
    @app_commands.describe(number="the entry's number in /lore list", character="another character than the one here")
    async def remove(self, interaction: discord.Interaction, number: int, character: Optional[str] = None) -> None:
        await begin(interaction)
        commands = app_of(interaction).commands
        await finish(interaction, await commands.lore_remove(actor_of(interaction), place_of(interaction), number, character))


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


@app_commands.describe(text="empty: who plays here and what they see; admins: set TEXT, reset, add NAME, remove NAME")
async def scene(interaction: discord.Interaction, text: Optional[str] = None) -> None:
    await begin(interaction)
    app = app_of(interaction)
    await finish(interaction, await app.commands.scene_command(actor_of(interaction), place_of(interaction), text))


@app_commands.autocomplete(character=character_names)
@app_commands.describe(character="who to talk to")
async def use(interaction: discord.Interaction, character: str) -> None:
    await begin(interaction)
    await finish(interaction, await app_of(interaction).commands.use(actor_of(interaction), place_of(interaction), character))


async def mood(interaction: discord.Interaction) -> None:
    """The mood as text with its picture (bars and their recent course) attached."""
    import io

    from bots.mood_picture import mood_png

    await begin(interaction)
    outcome = await app_of(interaction).commands.mood(actor_of(interaction), place_of(interaction))
    try:
        picture = await mood_png(outcome)
    except Exception:  # noqa: BLE001 - the text alone still answers
        log.exception("could not draw the mood picture")
        picture = None
    if picture is None:
        return await finish(interaction, outcome)
    await interaction.followup.send(
        outcome.message[:REPLY_LIMIT], file=discord.File(io.BytesIO(picture), filename="mood.png"),
        ephemeral=True, allowed_mentions=discord.AllowedMentions.none(),
    )


async def reset(interaction: discord.Interaction) -> None:
    await begin(interaction)
    await finish(interaction, await app_of(interaction).commands.reset(actor_of(interaction), place_of(interaction)))


@app_commands.describe(forget="the number of a memory to delete (see /memory)")
async def memory(interaction: discord.Interaction, forget: Optional[int] = None) -> None:
    """What the character here remembers about you; with ``forget``: delete that memory."""
    await begin(interaction)
    app = app_of(interaction)
    if forget is None:
        outcome = await app.commands.memory(actor_of(interaction), place_of(interaction))
    else:
        outcome = await app.commands.forget_memory(actor_of(interaction), place_of(interaction), forget)
    await finish(interaction, outcome)


async def forget(interaction: discord.Interaction) -> None:
    await begin(interaction)
    await finish(interaction, await app_of(interaction).commands.forget(actor_of(interaction)))


_TOP_LEVEL = (
    (bind, "Bind a character to this channel (admins)."),
    (unbind, "Remove the character from this channel (admins)."),
    (scene, "Who plays here and what they see; set TEXT, reset, add NAME, remove NAME (admins)."),
    (use, "In a DM with the bot: talk to this character from now on."),
    (mood, "How the character here feels toward you."),
    (reset, "Start your conversation with the character here over."),
    (memory, "What the character here remembers about you; forget: delete one."),
    (forget, "Delete everything stored about you."),
)


def build_commands() -> list[app_commands.Command | app_commands.Group]:
    """Fresh command objects for one client's tree."""
    commands: list[app_commands.Command | app_commands.Group] = [CharacterCommands(), LoreCommands()]
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
