"""The command layer every adapter calls: characters, bindings, scene, mood, reset, forget.

Adapters parse the platform's command and resolve who the actor is (admin of this chat, owner, or
neither); this layer decides, changes state, and returns an ``Outcome`` for the adapter to render.
A refused or invalid command changes nothing and says why.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any, Mapping

from core import cards, derive, lorebook
from core.card_dialogue import pick_greeting
from core.card_files import MAX_FILE_BYTES, read_card_file
from core.character import Character, check_name
from core.emotions import check_level
from core.errors import Conflict, InvalidInput, NotFound, PersonaeError
from core.events import ConversationKey, PersonKey, Trigger
from core.hot import HotState, character_histories_prefix, memory_key, person_prefixes, rate_key
from core.profile_notes import derived_note, field_value, missing_derivable, missing_note
from core.prompt import estimate_tokens, fill_placeholders
from core.scene import line_text, scene_around
from core.text import clean_text, clean_value, one_line, one_line_name
from core.ports import Cache, ChatModel, StateUpdater, Store
from core.state import Binding, RelationshipState

MAX_SCENE_CHARS = cards.MAX_SCENE_CHARS
MOOD_COURSE = 20  # state changes /mood shows the course of
AVATAR_EXT_CHARS = 8  # what the store keeps of an avatar's file extension
DERIVE_TIMEOUT_S = 20.0  # the longest an import waits for the model's proposal (PERSONAE_DERIVE_TIMEOUT_S)
# The commands that fill a card's missing fields, as a person in a chat reads them.
CHAT_EDIT = "/character edit"


def derive_command(name: str) -> str:
    """The command line that asks the model for a character's missing fields."""
    return f"`personae characters derive {name!r}`"

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Actor:
    """Who is asking, with the permissions the adapter resolved for this chat."""

    platform: str
    user_id: str
    display_name: str
    is_admin: bool = False
    is_owner: bool = False

    @property
    def privileged(self) -> bool:
        return self.is_admin or self.is_owner


@dataclass(frozen=True, slots=True)
class Place:
    """Where the command was given."""

    platform: str
    chat_id: str
    channel_id: str
    private: bool = False
    parent_channel_id: str | None = None


@dataclass(slots=True)
class Outcome:
    """What a command did: ``ok`` and a short plain message, plus data the adapter may show."""

    ok: bool
    message: str
    character: Character | None = None
    characters: list[Character] = field(default_factory=list)
    state: RelationshipState | None = None
    binding: Binding | None = None
    counts: dict[str, int] = field(default_factory=dict)
    greeting: str | None = None  # /use on first contact only: the character's opening line, just stored
    derived: tuple[str, ...] = ()  # import: the profile fields the model proposed and that were stored
    derive_failed: str | None = None  # import: why deriving the missing fields did not work, if it was tried
    course: list[RelationshipState] = field(default_factory=list)  # /mood: the recent states, oldest first, ending now
    memories: list[Any] = field(default_factory=list)  # /memory: what the character remembers of the actor here, numbered from 1


def refused(message: str) -> Outcome:
    return Outcome(False, message)


ADMIN_ONLY = "Only an admin of this chat (or a bot owner) can do that."
OWNER_ONLY_PRIVATE = "In a private chat only a bot owner can do that."


class Commands:
    """Platform-free implementations of the bot's commands."""

    def __init__(
        self,
        store: Store,
        cache: Cache,
        hot: HotState,
        *,
        max_card_bytes: int = MAX_FILE_BYTES,
        feelings: StateUpdater | None = None,
        derive_model: ChatModel | None = None,
        derive_timeout_s: float = DERIVE_TIMEOUT_S,
        card_examples: bool = False,
        scene_tokens: int = 0,
        scene_lines: int = 40,
    ) -> None:
        self.store = store
        # What /scene shows a character seeing: the channel's lines within this many tokens
        # (PERSONAE_SCENE_SHARE of the input budget), read from at most ``scene_lines`` of them.
        self.scene_tokens = scene_tokens
        self.scene_lines = scene_lines
        self.cache = cache
        self.hot = hot
        self.feelings = feelings  # reads a state as of now (drift); None: as stored
        self.max_card_bytes = max_card_bytes  # the largest card file (PNG, CharX or JSON) accepted
        # The model server that proposes the fields an imported card lacks (None: none is configured,
        # and the import says what the prompt uses instead).
        self.derive_model = derive_model
        self.derive_timeout_s = derive_timeout_s
        self.card_examples = card_examples  # PERSONAE_CARD_EXAMPLES: for cards that leave examples to it
        self.memory_keeper: Any = None  # the engine's ``core.memory.MemoryKeeper`` (None: memory is off)

    # -- characters -------------------------------------------------------------------------

    def _may_manage(self, actor: Actor, place: Place | None) -> str | None:
        if place is not None and place.private:
            return None if actor.is_owner else OWNER_ONLY_PRIVATE
        return None if actor.privileged else ADMIN_ONLY

    async def create_character(self, actor: Actor, place: Place | None, fields: Mapping[str, Any]) -> Outcome:
        """Create a character from profile fields (name, world, traits, mbti, style, ...)."""
        if (why := self._may_manage(actor, place)) is not None:
            return refused(why)
        fields = clean_value(dict(fields))  # type: ignore[assignment]
        known = {"name", "world", "traits", "mbti", "style", "language", "scene", "greeting", "description", "emotion", "relationship", "public"}
        unknown = sorted(set(fields) - known)
        if unknown:
            return refused(f"Unknown field {unknown[0]!r}; fields: {', '.join(sorted(known))}.")
        missing = [f for f in ("name", "world", "traits", "mbti", "style") if not fields.get(f)]
        if missing:
            return refused(f"Missing {', '.join(missing)}.")
        try:
            emotion = fields.get("emotion") or {}
            if isinstance(emotion, str):
                from core.emotions import EmotionState

                emotion = EmotionState.parse(emotion).as_dict()
            card = cards.new_card(
                name=check_name(fields["name"]),
                world=fields["world"],
                traits=_words(fields["traits"]),
                mbti=fields["mbti"],
                style=_words(fields["style"]),
                language=fields.get("language") or "en",
                scene=fields.get("scene") or "",
                greeting=fields.get("greeting") or "",
                description=fields.get("description") or "",
                emotion=emotion,
                relationship=check_level("relationship", fields.get("relationship", 3)),
                public=bool(fields.get("public", True)),
            )
            character = await self.store.characters.add(card)
        except (InvalidInput, Conflict, ValueError) as exc:
            return refused(_sentence(exc))
        return Outcome(True, f"Created {character.name}.", character=character)

    async def import_character(
        self, actor: Actor, place: Place | None, raw: bytes | str, filename: str | None = None
    ) -> Outcome:
        """Import a Character Card file: PNG (``ccv3`` or ``chara`` chunk), CharX, or V1/V2/V3 JSON.

        The format is told from the bytes (``filename`` only makes errors clearer); the image of a
        PNG, or a CharX file's main icon, is kept as the character's avatar.
        """
        if (why := self._may_manage(actor, place)) is not None:
            return refused(why)
        data = raw.encode("utf-8") if isinstance(raw, str) else raw
        try:
            found = read_card_file(data, filename, max_bytes=self.max_card_bytes)
            avatar, ext = found.avatar, found.avatar_ext
            if avatar is not None and (ext is None or len(ext) > AVATAR_EXT_CHARS):
                ext = "bin"  # an icon of a kind we do not know: kept, shown where a platform takes it
            character = await self.store.characters.add(found.card, avatar, ext if avatar is not None else None)
        except (InvalidInput, Conflict) as exc:
            return refused(f"Could not import the card: {_sentence(exc)}")
        derived: tuple[str, ...] = ()
        failed: str | None = None
        if self.derive_model is not None and missing_derivable(character.profile):
            character, derived, failed = await self._derive_missing(character)
        lines = [f"Imported {character.name}."]
        if derived:
            lines.append(derived_note(character.profile, derived, edit=CHAT_EDIT))
        if character.profile.missing:
            lines.append(missing_note(character.profile, edit=CHAT_EDIT, derive=derive_command(character.name), failed=failed))
        return Outcome(True, " ".join(lines), character=character, derived=derived, derive_failed=failed)

    async def _derive_missing(self, character: Character) -> tuple[Character, tuple[str, ...], str | None]:
        """Ask the model for the world, traits, MBTI and style the imported card lacks, and store them
        marked as derived; the character, the fields stored, and why nothing was (None: it worked).

        Inline, bounded by ``derive_timeout_s`` (PERSONAE_DERIVE_TIMEOUT_S, 20 s by default), rather
        than in the background: the answer is one small JSON object (about 60 tokens; on TGI the
        schema is enforced from the first token), a second or two on a GPU serving BD-RP, and only
        the admin who imports waits (Discord's deferred reply has 15 minutes, and both adapters
        handle other people's messages meanwhile). Inline, the import reply says what was derived,
        and no one can chat with the character before it has its profile; a background task would
        need a way to post a later note on every platform, and the character's first turns could
        reach the model with "MBTI: not specified". Past the timeout (or on any failure) the card
        stays imported and the reply says what the prompt uses and which command fills the fields.
        """
        assert self.derive_model is not None
        try:
            async with asyncio.timeout(self.derive_timeout_s):
                proposal = await derive.propose_profile(self.derive_model, character.card)
            # Read again: an admin may have edited it while the model thought; their fields stay.
            current = await self.store.characters.get(character.id)
            if current is None:
                raise NotFound(f"{character.name} was deleted while the model proposed its profile")
            character = current
            changes = derive.changes_to_apply(current.card, proposal)
            if not changes:
                return current, (), None
            card = cards.edit_card(current.card, changes, derived=True)
            updated = await self.store.characters.replace(current.id, card)
        except TimeoutError:
            return character, (), f"the model server gave no proposal within {self.derive_timeout_s:g} s"
        except InvalidInput as exc:
            return character, (), f"the model's proposal was not usable: {_one_line(exc)}"
        except PersonaeError as exc:  # ModelError (server down, refused), NotFound or Conflict (changed meanwhile)
            return character, (), _one_line(exc)
        except Exception as exc:  # noqa: BLE001  the card is stored: a surprise here must not lose the reply
            log.warning("deriving the profile of imported %s failed", character.name, exc_info=True)
            return character, (), f"unexpected {type(exc).__name__}"
        self.hot.forget_character(character.id)
        log.info("derived %s for imported %s", ", ".join(changes), character.name)
        return updated, tuple(f for f in derive.DERIVED_FIELDS if f in changes), None

    async def edit_character(
        self, actor: Actor, place: Place | None, name: str, changes: Mapping[str, Any], *, derived: bool = False
    ) -> Outcome:
        """Change profile fields; each one changed loses its derived mark (``derived``: the changes
        are the model's proposal, e.g. ``personae characters derive --accept``, and get the mark)."""
        name = clean_text(name)
        if (why := self._may_manage(actor, place)) is not None:
            return refused(why)
        character = await self.store.characters.get_by_name(name)
        if character is None:
            return refused(f"There is no character called {name!r}.")
        if not changes:
            return refused("Say what to change, e.g. world=..., traits=a,b, mbti=INTJ.")
        try:
            card = cards.edit_card(character.card, clean_value(dict(changes)), derived=derived)  # type: ignore[arg-type]
            updated = await self.store.characters.replace(character.id, card)
        except (InvalidInput, Conflict, NotFound) as exc:
            return refused(_sentence(exc))
        self.hot.forget_character(character.id)
        return Outcome(True, f"Updated {updated.name}.", character=updated)

    async def list_characters(self, actor: Actor) -> Outcome:
        characters = await self.store.characters.list()
        if not actor.privileged:
            characters = [c for c in characters if c.public]
        if not characters:
            return Outcome(True, "There are no characters yet.", characters=[])
        return Outcome(True, "Characters: " + ", ".join(c.name for c in characters), characters=characters)

    async def show_character(self, actor: Actor, name: str) -> Outcome:
        name = clean_text(name)
        character = await self.store.characters.get_by_name(name)
        if character is None or (not character.public and not actor.privileged):
            return refused(f"There is no character called {name!r}.")
        return Outcome(True, describe(character, card_examples=self.card_examples), character=character)

    async def character_avatar(self, character: Character) -> tuple[bytes, str] | None:
        """The avatar image of a character the caller already may see, and its extension; None if it has none.

        Read from the database on each call: it is for showing a character, not for the chat path.
        """
        return await self.store.characters.avatar(character.id)

    async def delete_character(self, actor: Actor, place: Place | None, name: str) -> Outcome:
        name = clean_text(name)
        if (why := self._may_manage(actor, place)) is not None:
            return refused(why)
        character = await self.store.characters.get_by_name(name)
        if character is None:
            return refused(f"There is no character called {name!r}.")
        await self.store.characters.delete(character.id)
        self.hot.forget_character(character.id)
        # Cached bindings to it now point nowhere; the engine ignores them until they expire.
        return Outcome(True, f"Deleted {character.name} and everything stored with it.", character=character)

    # -- lorebooks ---------------------------------------------------------------------------

    async def _lore_character(self, actor: Actor, place: Place | None, name: str | None) -> Character | Outcome:
        """The character whose lorebook an admin means: ``name``, else the one playing here."""
        if (why := self._may_manage(actor, place)) is not None:
            return refused(why)
        if name:
            name = clean_text(name).strip()
            character = await self.store.characters.get_by_name(name)
            return character if character is not None else refused(f"There is no character called {name!r}.")
        character = await self._character_here(place) if place is not None else None
        if character is None or isinstance(character, str):
            return refused("No character plays here: say which one with character=NAME (or /lore list NAME).")
        return character

    async def lore(self, actor: Actor, place: Place | None, text: str) -> Outcome:
        """``/lore ...`` as typed (Telegram, the console): parsed by ``core.lorebook.parse_lore_command``."""
        try:
            command = lorebook.parse_lore_command(clean_text(text))
        except InvalidInput as exc:
            return refused(_sentence(exc))
        if command.action == "list":
            return await self.lore_list(actor, place, command.character)
        assert command.number is not None or command.action == "add"
        if command.action == "show":
            return await self.lore_show(actor, place, command.number, command.character)  # type: ignore[arg-type]
        if command.action == "remove":
            return await self.lore_remove(actor, place, command.number, command.character)  # type: ignore[arg-type]
        if command.action == "add":
            return await self.lore_add(actor, place, command.fields or {}, command.character)
        return await self.lore_edit(actor, place, command.number, command.fields or {}, command.character)  # type: ignore[arg-type]

    async def lore_list(self, actor: Actor, place: Place | None, name: str | None = None) -> Outcome:
        """The entries of a character's lorebook, one line each, numbered for show, edit and remove."""
        found = await self._lore_character(actor, place, name)
        if isinstance(found, Outcome):
            return found
        entries = lorebook.entries_of(found.card)
        if not entries:
            return Outcome(True, f"{found.name} has no lorebook entries. Add one with /lore add keys=a,b; content=...", character=found)
        summary = lorebook.book_summary(found.card)
        lines = [f"{found.name}'s lorebook ({len(entries)} entr{'y' if len(entries) == 1 else 'ies'}; {summary}):"]
        size = len(lines[0])
        for i, e in enumerate(entries, 1):
            line = lorebook.describe_entry(i, e)
            if size + len(line) > LORE_SHOWN:  # one chat message: Telegram takes 4,096 characters
                lines.append(f"… and {len(entries) - i + 1} more (entries {i} to {len(entries)}: /lore show N).")
                break
            lines.append(line)
            size += len(line) + 1
        return Outcome(True, "\n".join(lines), character=found)

    async def lore_show(self, actor: Actor, place: Place | None, number: int, name: str | None = None) -> Outcome:
        found = await self._lore_character(actor, place, name)
        if isinstance(found, Outcome):
            return found
        try:
            entry = lorebook.entry_at(found.card, number)
        except InvalidInput as exc:
            return refused(_sentence(exc))
        text = lorebook.describe_entry(number, entry, full=True)
        if len(text) > LORE_SHOWN:
            text = text[:LORE_SHOWN] + f"… ({len(text) - LORE_SHOWN:,} more characters: the whole entry is in the exported card)"
        return Outcome(True, text, character=found)

    async def lore_add(self, actor: Actor, place: Place | None, fields: Mapping[str, Any], name: str | None = None) -> Outcome:
        """A new entry (keys and content at least, or constant=on and content) in the character's card."""
        found = await self._lore_character(actor, place, name)
        if isinstance(found, Outcome):
            return found
        try:
            card, number = lorebook.add_entry(found.card, clean_value(dict(fields)))  # type: ignore[arg-type]
            updated = await self._store_card(found, card)
        except (InvalidInput, Conflict, NotFound) as exc:
            return refused(_sentence(exc))
        return Outcome(True, f"Added entry {number} to {updated.name}'s lorebook.", character=updated)

    async def lore_edit(
        self, actor: Actor, place: Place | None, number: int, fields: Mapping[str, Any], name: str | None = None
    ) -> Outcome:
        """Change fields of entry ``number``; the entry's other fields, known or not, stay as they were."""
        found = await self._lore_character(actor, place, name)
        if isinstance(found, Outcome):
            return found
        try:
            card = lorebook.edit_entry(found.card, number, clean_value(dict(fields)))  # type: ignore[arg-type]
            updated = await self._store_card(found, card)
        except (InvalidInput, Conflict, NotFound) as exc:
            return refused(_sentence(exc))
        return Outcome(True, f"Updated entry {number} of {updated.name}'s lorebook.", character=updated)

    async def lore_remove(self, actor: Actor, place: Place | None, number: int, name: str | None = None) -> Outcome:
        found = await self._lore_character(actor, place, name)
        if isinstance(found, Outcome):
            return found
        try:
            card, _ = lorebook.remove_entry(found.card, number)
            updated = await self._store_card(found, card)
        except (InvalidInput, Conflict, NotFound) as exc:
            return refused(_sentence(exc))
        left = len(lorebook.entries_of(updated.card))
        return Outcome(True, f"Removed entry {number} from {updated.name}'s lorebook ({left} left; later entries moved up one).", character=updated)

    async def _store_card(self, character: Character, card: dict[str, Any]) -> Character:
        """Store a changed card (validated whole) and drop the hot copy, so the next turn reads it."""
        updated = await self.store.characters.replace(character.id, cards.normalise_card(card))
        self.hot.forget_character(character.id)
        return updated

    # -- bindings and scene -----------------------------------------------------------------

    async def bind(self, actor: Actor, place: Place, name: str, trigger: str = "all") -> Outcome:
        """Assign a character to this channel or group chat."""
        name = clean_text(name)
        if place.private:
            return refused("In a private chat, pick a character with /use instead.")
        if not actor.privileged:
            return refused(ADMIN_ONLY)
        try:
            mode = Trigger(trigger)
        except ValueError:
            return refused(TRIGGER_CHOICES.format(trigger=trigger))
        character = await self.store.characters.get_by_name(name)
        if character is None:
            return refused(f"There is no character called {name!r}.")
        binding = Binding(place.platform, place.chat_id, place.channel_id, character.id, mode)
        await self.store.bindings.put(binding)
        await self.hot.forget_binding(place.platform, place.channel_id)
        return Outcome(True, f"{character.name} now plays here and answers {_HOW[mode]}.", character=character, binding=binding)

    async def join(self, actor: Actor, place: Place, name: str, trigger: str | None = None) -> Outcome:
        """Add a character to this channel's scene, next to those already there (the scene text and
        the trigger are the channel's: a new trigger applies to all of them)."""
        name = clean_text(name)
        if place.private:
            return refused("In a private chat, pick a character with /use instead.")
        if not actor.privileged:
            return refused(ADMIN_ONLY)
        try:
            mode = Trigger(trigger) if trigger else None
        except ValueError:
            return refused(TRIGGER_CHOICES.format(trigger=trigger))
        character = await self.store.characters.get_by_name(name)
        if character is None:
            return refused(f"There is no character called {name!r}.")
        cast = await self.store.bindings.list(place.platform, place.channel_id)
        if any(b.character_id == character.id for b in cast) and (mode is None or mode is cast[0].trigger):
            return refused(f"{character.name} already plays here.")
        if len(cast) >= MAX_CAST and not any(b.character_id == character.id for b in cast):
            return refused(f"A channel holds at most {MAX_CAST} characters; take one out first with /scene remove NAME.")
        mode = mode or (cast[0].trigger if cast else Trigger.MENTION)  # an empty channel: the default, as /bind
        scene = cast[0].scene if cast else None
        binding = Binding(place.platform, place.chat_id, place.channel_id, character.id, mode, scene)
        for other in cast:
            if other.character_id != character.id and other.trigger is not mode:
                await self.store.bindings.add(_with(other, trigger=mode))
        await self.store.bindings.add(binding)
        await self.hot.forget_binding(place.platform, place.channel_id)
        names = [await self._name(b.character_id) for b in cast if b.character_id != character.id]
        others = f" with {', '.join(names)}" if names else ""
        return Outcome(
            True, f"{character.name} now plays here{others}; the characters answer {_HOW[mode]}.",
            character=character, binding=binding,
        )

    async def leave(self, actor: Actor, place: Place, name: str) -> Outcome:
        """Take one character out of this channel's scene (the others stay)."""
        name = clean_text(name)
        if not actor.privileged:
            return refused(ADMIN_ONLY)
        character = await self.store.characters.get_by_name(name)
        if character is None:
            return refused(f"There is no character called {name!r}.")
        if not await self.store.bindings.remove(place.platform, place.channel_id, character.id):
            return refused(f"{character.name} does not play here.")
        await self.hot.forget_binding(place.platform, place.channel_id)
        return Outcome(True, f"{character.name} has left this channel.", character=character)

    async def _name(self, character_id: int) -> str:
        character = await self.hot.character(character_id)
        return character.name if character is not None else "?"

    async def unbind(self, actor: Actor, place: Place) -> Outcome:
        if not actor.privileged:
            return refused(ADMIN_ONLY)
        cast = await self.store.bindings.list(place.platform, place.channel_id)
        if not await self.store.bindings.delete(place.platform, place.channel_id):
            return refused("No character is bound here.")
        await self.hot.forget_binding(place.platform, place.channel_id)
        return Outcome(True, "The characters have left this channel." if len(cast) > 1 else "The character has left this channel.")

    async def set_scene(self, actor: Actor, place: Place, text: str | None) -> Outcome:
        """Set this channel's scene (empty text: back to the character's own scenario)."""
        if not place.private and not actor.privileged:
            return refused(ADMIN_ONLY)
        cast = await self.store.bindings.list(place.platform, place.channel_id)
        if not cast:
            return refused("No character is bound here.")
        scene = one_line(clean_text(text or "")).strip() or None  # one line of the system prompt
        if scene is not None and len(scene) > MAX_SCENE_CHARS:
            return refused(f"The scene must be plain text under {MAX_SCENE_CHARS:,} characters.")
        # The scene is the channel's: every character there plays in it.
        for binding in cast:
            await self.store.bindings.add(_with(binding, scene=scene))
        new = _with(cast[0], scene=scene)
        await self.hot.forget_binding(place.platform, place.channel_id)
        return Outcome(True, "Scene set." if scene else "Scene reset to the character's own.", binding=new)

    async def scene_command(self, actor: Actor, place: Place, text: str | None) -> Outcome:
        """``/scene`` and its words: nothing or ``show [NAME]`` shows the scene; ``add NAME [trigger]``
        and ``remove NAME`` change who plays here; ``set TEXT`` sets the scene text, ``reset`` gives
        back the character's own. Any other first word changes nothing and lists the forms (a
        mistyped ``rmove Hamlet`` must not become the scene)."""
        words = clean_text(text or "").strip()
        said, _, rest = words.partition(" ")
        verb, rest = said.casefold(), rest.strip()
        if not words or verb == "show":
            return await self.scene(actor, place, rest or None)
        if verb == "add":
            if not rest:
                return refused("Say which character: /scene add NAME [all|mention|conversation].")
            name, trigger = rest, None
            head, _, last = rest.rpartition(" ")
            head = head.strip()
            if head and last.casefold() in {t.value for t in Trigger}:
                name, trigger = head, last.casefold()
            elif head and actor.privileged and not place.private and await self.store.characters.get_by_name(rest) is None:
                # No character is called all of it: the last word was meant as the trigger.
                why = TRIGGER_CHOICES.format(trigger=last)
                if await self.store.characters.get_by_name(head) is None:
                    why = f"{why[:-1]}; and there is no character called {head!r}."
                return refused(why)
            return await self.join(actor, place, name, trigger)
        if verb == "remove":
            if not rest:
                return refused("Say which character: /scene remove NAME.")
            return await self.leave(actor, place, rest)
        if verb == "reset":
            return await self.set_scene(actor, place, None)
        if verb == "set":
            if not rest:
                return refused("Say the scene: /scene set TEXT (or /scene reset for the character's own).")
            return await self.set_scene(actor, place, rest)
        return refused(f"Unknown /scene word {said[:40]!r}: {SCENE_FORMS}.")

    async def scene(self, actor: Actor, place: Place, name: str | None = None) -> Outcome:
        """Who is in this channel's scene, and what the character (named, or the one the actor talks
        to) sees besides its own conversation with the actor when they next write."""
        character = await self._character_here(place, actor, name)
        if isinstance(character, str):
            return refused(character)
        cast = await self._cast_here(place)
        binding = next((b for b in cast if b.character_id == character.id), cast[0])
        text = binding.scene if binding.scene is not None else character.profile.scene
        # As the system prompt has it for this person (core.prompt.render_system_prompt).
        text = fill_placeholders(text, char=character.name, user=one_line_name(actor.display_name))
        lines = [f"Scene: {text[:300]}{'…' if len(text) > 300 else ''}" if text else "Scene: (none set; /scene set TEXT)"]
        if binding.private:
            lines.append(
                f"This is a private chat: {character.name} sees your conversation with it and nothing from any channel, "
                "and nothing said here reaches a channel."
            )
            return Outcome(True, "\n".join(lines), character=character, binding=binding)
        names = [await self._name(b.character_id) for b in cast]
        lines.append(f"Characters here: {', '.join(names)} (they answer {_HOW[cast[0].trigger]}).")
        conversation = ConversationKey(character.id, place.platform, place.channel_id, actor.user_id)
        own = await self.store.messages.recent(conversation, 40)
        history = [(m.id, m.role, m.content, m.tokens) for m in own]
        seen = await scene_around(
            self.store, self.hot, character, binding, conversation, history,
            before_id=None, share=self.scene_tokens, limit=self.scene_lines,
        )
        if self.scene_tokens <= 0:
            lines.append(f"{character.name} sees only your own conversation with it (PERSONAE_SCENE_SHARE is 0).")
        elif not seen:
            lines.append(f"{character.name} sees your conversation with it; nothing else has been said here yet.")
        else:
            people = sorted({line.speaker for line in seen})
            lines.append(
                f"Besides your conversation with it ({len(own)} message{'' if len(own) == 1 else 's'}), {character.name} "
                f"sees the newest {len(seen)} line{'' if len(seen) == 1 else 's'} said here, by {', '.join(people)}:"
            )
            lines.extend(line_text(line, character.profile.language)[:200] for line in seen[-SCENE_SHOWN:])
            if len(seen) > SCENE_SHOWN:
                lines.append(f"(and {len(seen) - SCENE_SHOWN} older)")
        return Outcome(True, "\n".join(lines), character=character, binding=binding)

    async def use(self, actor: Actor, place: Place, name: str) -> Outcome:
        """In a private chat: talk to this character from now on."""
        name = clean_text(name)
        if not place.private:
            return refused("/use works in private chats; in a group an admin binds a character with /bind.")
        character = await self.store.characters.get_by_name(name)
        if character is None or (not character.public and not actor.is_owner):
            return refused(f"There is no character called {name!r}. See the list with /characters.")
        binding = Binding(place.platform, place.chat_id, place.channel_id, character.id, Trigger.ALL, None, True)
        await self.store.bindings.put(binding)
        await self.hot.forget_binding(place.platform, place.channel_id)
        message = f"You are now talking to {character.name}."
        # First contact: the greeting opens the conversation and is its first stored turn.
        conversation = ConversationKey(character.id, place.platform, place.channel_id, actor.user_id)
        greeting = pick_greeting(character, actor.display_name)
        if not greeting or await self.store.messages.recent(conversation, 1):
            # The story is under way (or there is no greeting): the caller may recap it.
            return Outcome(True, message, character=character, binding=binding)
        await self.store.messages.add_greeting(conversation, greeting, estimate_tokens(greeting))
        await self.hot.forget_conversation(conversation)
        message += f"\n\n{character.name}: {greeting}"
        return Outcome(True, message, character=character, binding=binding, greeting=greeting)

    # -- a person's own data ----------------------------------------------------------------

    async def _cast_here(self, place: Place) -> list[Binding]:
        channels = [place.channel_id] + ([place.parent_channel_id] if place.parent_channel_id else [])
        for cast in await self.hot.casts(place.platform, *channels):
            if cast:
                return cast
        return []

    async def _character_here(self, place: Place, actor: Actor | None = None, name: str | None = None) -> Character | str:
        """The character meant here: the one named, else (several) the one the actor talked to last,
        else the first bound; or a message saying why there is none."""
        cast = await self._cast_here(place)
        if not cast:
            return NO_CHARACTER_HERE if not place.private else NO_CHARACTER_PRIVATE
        chosen = cast[0].character_id
        if name:
            name = clean_text(name)
            found = await self.store.characters.get_by_name(name)
            if found is None or not any(b.character_id == found.id for b in cast):
                names = ", ".join([await self._name(b.character_id) for b in cast])
                if place.private:  # the /use choice is the one character here
                    return f"Here you talk to {names}, not {name!r}: leave the name out, or /use NAME to switch."
                return f"No character called {name!r} plays here (here: {names})."
            chosen = found.id
        elif len(cast) > 1 and actor is not None:
            last = await self.store.messages.last_partner(place.platform, place.channel_id, actor.user_id)
            chosen = last if any(b.character_id == last for b in cast) else chosen
        character = await self.hot.character(chosen)
        return character if character is not None else NO_CHARACTER_HERE

    async def mood(self, actor: Actor, place: Place, name: str | None = None) -> Outcome:
        """The character's current emotions and intimacy toward the actor, and their recent course."""
        character = await self._character_here(place, actor, name)
        if isinstance(character, str):
            return refused(character)
        person = PersonKey(character.id, actor.platform, actor.user_id)
        state = await self.hot.read_state(person, character)
        if self.feelings is not None:
            state = self.feelings.as_of_now(state, character)
        changes = await self.store.relationships.changes(person, limit=MOOD_COURSE)  # newest first
        course = ([changes[-1].before] if changes else []) + [c.after for c in reversed(changes)]
        if not course or (course[-1].emotion, course[-1].intimacy) != (state.emotion, state.intimacy):
            course.append(state)
        lines = [f"{name}: {'█' * value}{'·' * (10 - value)} {value}" for name, value in state.emotion.as_dict().items()]
        lines.append(f"intimacy: {'█' * state.intimacy}{'·' * (10 - state.intimacy)} {state.intimacy}")
        message = f"{character.name} toward {actor.display_name}:\n" + "\n".join(lines)
        return Outcome(True, message, character=character, state=state, course=course)

    async def reset(self, actor: Actor, place: Place, name: str | None = None) -> Outcome:
        """Forget this conversation's history (the character's feelings stay)."""
        character = await self._character_here(place, actor, name)
        if isinstance(character, str):
            return refused(character)
        conversation = ConversationKey(character.id, actor.platform, place.channel_id, actor.user_id)
        deleted = await self.store.messages.delete_conversation(conversation)
        await self.store.memories.reset(conversation)  # the new history is condensed from its start
        await self.hot.forget_conversation(conversation)
        # The characters' answers to each other its replies started went with it (trigger
        # conversation): their conversations' cached histories go too, to be read again.
        await self.cache.delete_prefix(character_histories_prefix(actor.platform))
        return Outcome(True, f"Started over with {character.name} ({deleted} message{'' if deleted == 1 else 's'} forgotten).", character=character, counts={"messages": deleted})

    async def memory(self, actor: Actor, place: Place) -> Outcome:
        """What the character here remembers of the actor in this chat, numbered, with dates."""
        found = await self._memories_here(actor, place)
        if isinstance(found, Outcome):
            return found
        character, _, memories = found
        if not memories:
            note = "" if self.memory_keeper is not None else " (memory is off: PERSONAE_MEMORY)"
            return Outcome(True, f"{character.name} remembers nothing about you here yet{note}.", character=character)
        lines = [f"{character.name} remembers about you here:"]
        lines += [f"{n}. {m.text} ({m.kind}, {m.created_at:%Y-%m-%d})" for n, m in enumerate(memories, 1)]
        lines.append("Delete one with /memory forget N, all of them (and everything else) with /forget.")
        return Outcome(True, "\n".join(lines), character=character, memories=memories)

    async def forget_memory(self, actor: Actor, place: Place, number: str | int) -> Outcome:
        """Delete memory number ``number`` of the /memory list."""
        try:
            n = int(str(number).strip())
        except ValueError:
            return refused(f"Give the number of a memory from /memory, e.g. /memory forget 2 (not {one_line(str(number))[:40]!r}).")
        found = await self._memories_here(actor, place)
        if isinstance(found, Outcome):
            return found
        character, conversation, memories = found
        if not 1 <= n <= len(memories):
            if not memories:
                return refused(f"{character.name} remembers nothing about you here.")
            return refused(f"There is no memory number {n}: /memory lists 1 to {len(memories)}.")
        memory = memories[n - 1]
        if not await self.store.memories.delete(conversation, memory.id):
            return refused("That memory is already gone: see /memory again.")
        await self._memory_changed(conversation)
        return Outcome(True, f"{character.name} forgot: {memory.text}", character=character, memories=[memory])

    async def _memories_here(self, actor: Actor, place: Place) -> Outcome | tuple[Character, ConversationKey, list[Any]]:
        character = await self._character_here(place, actor)  # in a scene: the one the person talked to last
        if isinstance(character, str):
            return refused(character)
        conversation = ConversationKey(character.id, actor.platform, place.channel_id, actor.user_id)
        return character, conversation, await self.store.memories.list(conversation)

    async def _memory_changed(self, conversation: ConversationKey) -> None:
        if self.memory_keeper is not None:
            await self.memory_keeper.forget(conversation)  # under the conversation's lock: no turn puts it back
        else:
            await self.cache.delete(memory_key(conversation))

    async def forget(self, actor: Actor) -> Outcome:
        """Delete everything stored about the actor on this platform, for every character."""
        counts = await self.store.forget_person(actor.platform, actor.user_id)
        # The characters' conversations with each other lose the lines the person's replies started
        # (core.ports.Store.forget_person): their cached histories go too, to be read again.
        for prefix in (*person_prefixes(actor.platform, actor.user_id), character_histories_prefix(actor.platform)):
            await self.cache.delete_prefix(prefix)
        await self.cache.delete(rate_key(actor.platform, actor.user_id))
        parts = ", ".join(f"{n} {kind}" for kind, n in counts.items())
        return Outcome(True, f"Deleted everything stored about you: {parts or 'nothing was stored'}.", counts=counts)


NO_CHARACTER_HERE = "No character plays in this channel."
TRIGGER_CHOICES = "Trigger must be 'all', 'mention' or 'conversation', not {trigger!r}."
SCENE_FORMS = (
    "/scene (shows the scene), /scene set TEXT, /scene reset, /scene add NAME [mention|all|conversation], /scene remove NAME"
)
MAX_CAST = 8  # characters in one channel
SCENE_SHOWN = 10  # lines /scene quotes
_HOW = {
    Trigger.ALL: "every message",
    Trigger.MENTION: "mentions and replies",
    Trigger.CONVERSATION: "every message, and each other when one names another",
}


def _with(binding: Binding, **changes: Any) -> Binding:
    fields = dict(
        platform=binding.platform, chat_id=binding.chat_id, channel_id=binding.channel_id,
        character_id=binding.character_id, trigger=binding.trigger, scene=binding.scene, private=binding.private,
    )
    fields.update(changes)
    return Binding(**fields)
NO_CHARACTER_PRIVATE = "You have not picked a character yet: see /characters and /use."


EXAMPLES_SHOWN = 600  # characters of a card's example dialogue /character show quotes
LORE_SHOWN = 3500  # characters of /lore list and /lore show: one chat message on every platform


def describe(character: Character, *, edit: str = CHAT_EDIT, card_examples: bool = False) -> str:
    """A short human description of a character's profile.

    A field the card lacks shows the value the prompt uses instead, marked "missing"; a field the
    model proposed is marked "derived" until an admin edits it. ``edit`` names the edit command
    where the person reads this; ``card_examples`` is the PERSONAE_CARD_EXAMPLES setting in effect.
    """
    p = character.profile

    def shown(field: str, value: str) -> str:
        if field in p.missing:
            return f"{field_value(p, field)} (missing: the prompt uses this)"
        if field in p.derived:
            return f"{value} (derived by the model)"
        return value

    lines = [
        f"{p.name} ({'public' if character.public else 'private'}, {p.language})",
        f"World: {shown('world', p.world)}",
        f"Traits: {shown('traits', ', '.join(p.traits))}",
        f"MBTI: {shown('mbti', p.mbti or '')}",
        f"Style: {shown('style', ', '.join(p.style))}",
        f"Baseline: {p.emotion.render('en')}; intimacy {p.relationship}",
    ]
    if p.scene:
        lines.append(f"Scene: {p.scene[:300]}{'…' if len(p.scene) > 300 else ''}")
    if p.missing:
        fill = f"set them with {edit}" + (f" or {derive_command(p.name)}" if missing_derivable(p) else "")
        lines.append(f"Missing profile fields: {', '.join(p.missing)} ({fill}).")
    if entries := lorebook.entries_of(character.card):
        lines.append(f"Lorebook: {len(entries)} entr{'y' if len(entries) == 1 else 'ies'} (in a chat: /lore list {p.name}).")
    if character.examples.strip():
        switch = cards.examples_switch(character.card)
        if switch is None:
            sent = f"{'on' if card_examples else 'off'}, from PERSONAE_CARD_EXAMPLES"
        else:
            sent = f"{'on' if switch else 'off'}, set for this character"
        text = character.examples.strip()
        lines.append(f"Example dialogue (sent to the model: {sent}; change with edit examples=on|off|default):")
        lines.append(f"{text[:EXAMPLES_SHOWN]}{'…' if len(text) > EXAMPLES_SHOWN else ''}")
    return "\n".join(lines)


def _words(value: Any) -> list[str]:
    if isinstance(value, str):
        return [w.strip() for w in value.split(",") if w.strip()]
    return list(value)


def _one_line(exc: BaseException, limit: int = 200) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _sentence(exc: PersonaeError | ValueError) -> str:
    text = str(exc).strip()
    text = text[:1].upper() + text[1:]
    return text if text.endswith((".", "!", "?")) else text + "."
