"""What the model will see for the next message in a stored channel (``personae prompt --channel``).

Built by the turn's own steps (``core.turn.ChatTurn``: load's history and greeting rule, the scene
step, compose) on the stored state, without storing anything or asking a model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from core.card_dialogue import greeting_options
from core.errors import InvalidInput
from core.events import ChatEvent, ConversationKey, PersonKey, Platform
from core.prompt import estimate_tokens
from core.reply import Reply, ReplyStatus
from core.state import RelationshipState

if TYPE_CHECKING:
    from core.character import Character
    from core.engine import Engine


_LISTED = 5  # channels named when the one asked for has no character


@dataclass(frozen=True, slots=True)
class Preview:
    """The messages for the model, the character that would answer, and what to tell the reader."""

    messages: list[dict[str, str]]
    character: "Character"
    notes: tuple[str, ...] = ()


async def next_turn(engine: "Engine", event: ChatEvent, *, character_name: str | None = None) -> Preview:
    """The messages the model would get for ``event`` in its stored channel; InvalidInput says why
    no character would answer it."""
    from core.turn import ChatTurn

    notes: list[str] = []
    cast = await engine.cast_for(event)
    if not cast and event.platform == Platform.CONSOLE:
        raise InvalidInput(
            f"no character plays in console:{event.channel_id}: a console chat is one person's, "
            "console:console-NAME once `personae chat --user NAME` has chosen a character there "
            "(channels with several characters are Discord's and Telegram's: /bind, /scene add)"
        )
    if not cast:
        bound = await engine.store.bindings.channels(event.platform, _LISTED + 1)
        where = ", ".join(f"{event.platform}:{c}" for c in bound[:_LISTED]) + (", …" if len(bound) > _LISTED else "")
        raise InvalidInput(
            f"no character is bound to {event.platform}:{event.channel_id} (see /bind, /scene add); "
            + (f"channels with characters there: {where}" if bound else f"no {event.platform} channel has one")
        )
    if character_name:
        wanted = await engine.store.characters.get_by_name(character_name)
        binding = next((b for b in cast if wanted is not None and b.character_id == wanted.id), None)
        if binding is None:
            names = [c.name for b in cast if (c := await engine.hot.character(b.character_id)) is not None]
            raise InvalidInput(f"no character called {character_name!r} plays in this channel (here: {', '.join(names)})")
    else:
        answerable = await engine.answerable(event)
        if isinstance(answerable, ReplyStatus):
            raise InvalidInput(
                "no character would answer that message here (the trigger wants a mention or a name): "
                "name one in --message, or pick one with --character"
            )
        binding = answerable[1]
    character = await engine.hot.character(binding.character_id)
    if character is None:
        raise InvalidInput("the character bound there was deleted")
    conversation = ConversationKey(character.id, event.platform, event.channel_id, event.user_id)
    person = PersonKey(character.id, event.platform, event.user_id)
    cfg = engine.config
    state = await engine.store.relationships.get(person) or RelationshipState(
        character.id, event.platform, event.user_id, character.profile.emotion, character.profile.relationship
    )
    turn = ChatTurn(engine, Reply(_nothing), character, binding, conversation, event.display_name, event.text)
    turn.state = engine.state_updater.as_of_now(state, character)
    history, turn.from_start = await engine.hot.history(conversation, cfg.history_turns)
    if not history:
        options = greeting_options(character.card, character.profile.greeting, char=character.name, user=event.display_name)
        if options:
            history = [(0, "assistant", options[0], estimate_tokens(options[0]))]
            if len(options) > 1:
                notes.append("note: the bots pick the greeting at random among the card's greetings; this shows the first")
    turn.history = history
    await turn.look_around()
    messages = await turn.compose()
    notes.append(
        f"{character.name} answers {event.display_name}: {len(turn.history)} stored turn(s) of theirs, "
        f"{len(turn.scene_lines)} line(s) of the scene around it"
    )
    return Preview(messages, character, tuple(notes))


async def _nothing(reply: Reply):  # pragma: no cover - a preview's turn never runs
    return
    yield ""


class EstimatingModel:
    """A ``ChatModel`` stand-in for previews: counts tokens by estimate, generates nothing."""

    async def count_tokens(self, text: str) -> int:
        return estimate_tokens(text)

    def stream(self, *args, **kwargs):  # pragma: no cover - never called by a preview
        raise InvalidInput("a preview asks no model")

    async def complete(self, *args, **kwargs) -> str:  # pragma: no cover
        raise InvalidInput("a preview asks no model")

    async def close(self) -> None:
        return None
