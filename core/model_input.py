"""What the model sees for a reply, built in one place: the engine and ``personae prompt`` both call
``model_messages``; ``render_mistral_raw`` writes those messages in the training layout.

The greeting a person is shown opens the conversation the model sees too: it is the first assistant
turn, after a short opening stage line (``OPENING_LINES``) that the training layout can express
(``{system}[INST] (Elena approaches Hamlet.) [/INST]{greeting}</s>[INST] {u1} [/INST]``). The
opening line is composed for the model only; the stored history keeps the greeting alone.
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence, TypeVar

from core.card_dialogue import parse_examples
from core.character import CharacterProfile
from core.emotions import EmotionState
from core.lorebook import LoreSettings, activate
from core.prompt import Turn, build_messages, estimate_tokens, fill_placeholders, render_system_prompt
from core.scene import DEFAULT_LAYOUT, SceneLine, fold_into_turns, into_slot
from core.scene_text import lore_line, scene_text
from core.text import neutralise_controls, one_line_name

T = TypeVar("T")

# The user turn in front of the greeting: a stage line in the character's language, in the
# parenthesised action style of the training dialogues. ``{user}`` is the person, ``{char}`` the character.
OPENING_LINES = {
    "en": "({user} approaches {char}.)",
    "zh": "（{user}走向{char}。）",
}


def opening_line(profile: CharacterProfile, user: str) -> str:
    """The opening stage line for ``user`` meeting ``profile``'s character (the names are one line)."""
    template = OPENING_LINES.get(profile.language, OPENING_LINES["en"])
    return template.format(user=one_line_name(user), char=one_line_name(profile.name))


def history_window(entries: Sequence[T], limit: int) -> tuple[list[T], bool]:
    """The last ``limit`` of ``entries`` (the conversation from its start, or its last ``limit + 1``
    turns), and True when they reach the conversation's start: then a leading reply is the greeting."""
    from_start = len(entries) <= limit
    return list(entries[len(entries) - limit :] if not from_start else entries), from_start


def with_opening(profile: CharacterProfile, user: str, history: Sequence[Turn], *, from_start: bool = True) -> list[Turn]:
    """``history`` with the opening line in front of a leading greeting.

    A leading assistant turn is the greeting when ``history`` starts at the start of the conversation
    (``from_start``); otherwise it is the tail of an exchange cut off by the history window and is left
    out (``build_messages`` keeps user turns first).
    """
    turns = [t for t in history if t.content]
    if turns and turns[0].role == "assistant" and from_start:
        return [Turn("user", opening_line(profile, user)), *turns]
    return turns


def model_messages(
    profile: CharacterProfile,
    *,
    user: str,
    text: str,
    history: Sequence[Turn] = (),
    scene: str | None = None,
    emotion: EmotionState | None = None,
    intimacy: int | None = None,
    examples: str = "",
    use_examples: bool = False,
    from_start: bool = True,
    lore: LoreSettings = LoreSettings(),
    budget: int | None = None,
    count: Callable[[str], int] | None = None,
    memories: Sequence[str] = (),
    scene_lines: Sequence[SceneLine] = (),
    scene_layout: str = DEFAULT_LAYOUT,
) -> list[dict[str, str]]:
    """The messages the model gets for ``user``'s new ``text`` to ``profile``'s character.

    ``history`` is the conversation so far, oldest first, the greeting (if any) as its first assistant
    turn; ``scene``, ``emotion`` and ``intimacy`` default to the card's. ``examples`` is the card's
    example dialogue (``mes_example``), sent as leading turns only with ``use_examples``. With
    ``budget`` and ``count``, example dialogue and then the oldest exchanges (the opening line and the
    greeting as one) are left out until the messages fit.

    The scene slot gets the lorebook entries the recent turns and ``text`` activate (``lore``: the
    deployment's limits; ``core.lorebook``), then ``memories`` (what the character remembers of the
    person, ``core.memory``), composed by ``core.scene_text.scene_text``. ``scene_lines`` are the
    channel's lines around the conversation (``core.scene``), folded into the user turns (layout
    ``turns``) or written into the scene slot after the rest (``slot``); the system prompt is still
    the person's.
    """
    scene = scene_text(
        scene if scene is not None else profile.scene,
        lore_texts(profile, user=user, turns=[*(t.content for t in history), text], settings=lore),
        memories,
        language=profile.language,
    )
    if scene_lines and scene_layout == "slot":
        scene = into_slot(scene, scene_lines, language=profile.language)
    elif scene_lines:
        history, text = fold_into_turns(history, text, scene_lines, user=user, language=profile.language)
    system = render_system_prompt(profile, chat_role=user, scene=scene, emotion=emotion, relationship=intimacy)
    leading = parse_examples(examples, char=profile.name, user=user) if use_examples and examples else []
    turns = with_opening(profile, user, history, from_start=from_start)
    return build_messages(system, turns, text, examples=leading, budget=budget, count=count)


def lore_texts(profile: CharacterProfile, *, user: str, turns: Sequence[str], settings: LoreSettings = LoreSettings()) -> list[str]:
    """The content of the lorebook entries ``turns`` (oldest first, the new message last) activate, in
    prompt order, within the budget (counted by ``estimate_tokens`` on the text as the scene holds it)."""
    if profile.lorebook is None:
        return []
    names = {"char": profile.name, "user": one_line_name(user)}
    entries = activate(
        profile.lorebook, [t for t in turns if t], settings=settings,
        names=lambda key: fill_placeholders(key, **names),
        count=estimate_tokens,
        join=lambda pieces: lore_line(pieces, profile.language),
        character=profile.name,
    )
    return [e.content for e in entries]


def chat_payload(messages: Sequence[Mapping[str, str]]) -> list[dict[str, str]]:
    """The messages as the chat API gets them: the server's chat template puts them into one string
    that its tokenizer reads, so control strings inside them are neutralised here too."""
    return [{**m, "content": neutralise_controls(m["content"])} for m in messages]


def render_mistral_raw(messages: Sequence[Mapping[str, str]], *, bos: str = "<s>", eos: str = "</s>") -> str:
    """Render a conversation in LLaMA-Factory's ``mistral`` template (the layout BD-RP was most likely
    trained in): ``<s>{system}[INST] {user1} [/INST]{assistant1}</s>[INST] {user2} [/INST]``.

    The system text appears once, before the first ``[INST]``; every finished assistant turn ends
    with ``</s>``; a conversation that ends with an assistant turn is left open (a prefill). Control
    strings inside the messages are neutralised (``core.text.neutralise_controls``): the only
    control tokens in the result are the ones this function writes.
    Servers add the BOS token themselves when they tokenize a raw prompt (TGI, vLLM and llama.cpp
    all do), so the client sends this with ``bos=""``.
    """
    out = [bos]
    for index, message in enumerate(messages):
        # Text from people and cards must not become [INST], </s> or any other control token.
        role, content = message["role"], neutralise_controls(message["content"])
        if role == "system":
            if index != 0:
                raise ValueError("the mistral layout takes one system message, first")
            out.append(content)
        elif role == "user":
            out.append(f"[INST] {content} [/INST]")
        elif role == "assistant":
            out.append(content)
            if index != len(messages) - 1:
                out.append(eos)
        else:
            raise ValueError(f"the mistral layout has no role {role!r}")
    return "".join(out)
