"""Deriving the BeyondDialogue fields a card from elsewhere lacks (world, traits, MBTI, style).

The model reads the card's description, personality, scenario and example dialogue and proposes
the four fields as one JSON object. This is our own prompt, not one of BeyondDialogue's training
templates (those are in ``core.prompt_templates`` and must not change); it follows the shape of
their derived tasks: role information, dialogues, then "end with this JSON". It goes in the layout
of the replies (for BD-RP the raw training string, as the appraisals). On TGI the answer is
constrained to ``PROPOSAL_SCHEMA``; elsewhere the last JSON object of the answer is taken.

Everything here is pure except ``propose_profile``, which makes one call on the ``ChatModel`` port.
"""

from __future__ import annotations

from typing import Any, Mapping

from core.cards import edit_card, profile_from_card
from core.character import DERIVABLE_FIELDS, MAX_NAME_CHARS, check_mbti, check_text, check_words
from core.errors import InvalidInput
from core.json_answer import last_json_object
from core.ports import ChatModel
from core.prompt import fill_placeholders

DERIVED_FIELDS = DERIVABLE_FIELDS
MAX_WORLD_CHARS = MAX_NAME_CHARS * 4  # what ``profile_from_card`` accepts for a world
# How much of each card field goes into the prompt: enough to judge a character, short enough
# for a 4,096-token model with room for the answer.
_EXCERPT_CHARS = {"description": 2_000, "personality": 600, "scenario": 600, "mes_example": 1_500}
_USER = "User"  # who {{user}} stands for in the example dialogue

SYSTEM = "You are a helpful assistant."
DERIVE_PROMPT = (
    "You are an expert in character analysis, skilled at inferring a role's personality from its "
    "description and the way it speaks. Base the analysis only on the information below.\n"
    "[Role Information]\n"
    "Name: {role_name}\n"
    "Description: {description}\n"
    "Personality: {personality}\n"
    "Scenario: {scenario}\n"
    "[Dialogues]\n"
    "{dialogues}\n"
    "\n"
    "Describe {role_name} with four fields:\n"
    "- world: the world or setting {role_name} lives in, in a few words (for example \"a harbour town in a steam-powered empire\");\n"
    "- traits: three to five adjectives for {role_name}'s character (for example \"curious\", \"stubborn\", \"warm\");\n"
    "- mbti: {role_name}'s MBTI personality type, four letters (for example \"INTP\");\n"
    "- style: three to five adjectives for {role_name}'s speaking style (for example \"blunt\", \"playful\", \"wordy\").\n"
    "Write world, traits and style in {language}.\n"
    "\n"
    "Reason in one or two brief sentences, then end your answer with the result in a JSON-parsable format as follows:\n"
    '{{"world": "...", "traits": ["...", "..."], "mbti": "XXXX", "style": ["...", "..."]}}'
)
_LANGUAGE_NAMES = {"en": "English", "zh": "Chinese"}
_NOTHING = "(none given)"

PROPOSAL_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "world": {"type": "string", "minLength": 1, "maxLength": 120},
        "traits": {"type": "array", "items": {"type": "string", "minLength": 1, "maxLength": 40}, "minItems": 1, "maxItems": 5},
        "mbti": {"type": "string", "pattern": "^[EI][NS][TF][JP]$"},
        "style": {"type": "array", "items": {"type": "string", "minLength": 1, "maxLength": 40}, "minItems": 1, "maxItems": 5},
    },
    "required": list(DERIVED_FIELDS),
    "additionalProperties": False,
}


def derive_messages(card: Mapping[str, Any]) -> list[dict[str, str]]:
    """The chat messages that ask the model for the card's world, traits, MBTI and style."""
    data = card["data"]
    profile = profile_from_card(card)
    name = profile.name

    def excerpt(key: str) -> str:
        text = fill_placeholders(str(data.get(key) or ""), char=name, user=_USER).strip()
        limit = _EXCERPT_CHARS[key]
        return (text[:limit].rstrip() + " …") if len(text) > limit else text

    dialogues = "\n".join(
        line.strip() for line in excerpt("mes_example").splitlines()
        if line.strip() and line.strip().upper() != "<START>"
    )
    user = DERIVE_PROMPT.format(
        role_name=name,
        description=excerpt("description") or _NOTHING,
        personality=excerpt("personality") or _NOTHING,
        scenario=excerpt("scenario") or _NOTHING,
        dialogues=dialogues or _NOTHING,
        language=_LANGUAGE_NAMES[profile.language],
    )
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]


def parse_proposal(text: str) -> dict[str, Any]:
    """The four fields from the model's answer, checked as ``edit`` would; InvalidInput says what is wrong."""
    obj = last_json_object(text)
    if obj is None:
        raise InvalidInput("the model's answer holds no JSON object")
    fields = {str(k).strip().lower(): v for k, v in obj.items()}
    missing = [f for f in DERIVED_FIELDS if f not in fields]
    if missing:
        raise InvalidInput(f"the model's proposal has no {', '.join(missing)}")
    world = check_text("world", fields["world"], limit=MAX_WORLD_CHARS, required=True)
    world = " ".join(world.split())
    return {
        "world": world,
        "traits": list(check_words("traits", fields["traits"], limit=8)),
        "mbti": check_mbti(fields["mbti"]),
        "style": list(check_words("style", fields["style"], limit=8)),
    }


def changes_to_apply(card: Mapping[str, Any], proposal: Mapping[str, Any], *, overwrite: bool = False) -> dict[str, Any]:
    """The part of ``proposal`` to write: the fields the card lacks (all four with ``overwrite``).

    Raises InvalidInput when the edited card would not be valid, so nothing is written then.
    """
    missing = set(profile_from_card(card).missing)
    changes = {k: v for k, v in proposal.items() if k in DERIVED_FIELDS and (overwrite or k in missing)}
    edit_card(card, changes)  # the same checks as an admin's edit
    return changes


async def propose_profile(
    model: ChatModel, card: Mapping[str, Any], *, max_tokens: int = 320, temperature: float = 0.2
) -> dict[str, Any]:
    """Ask the model for the card's world, traits, MBTI and style; the checked proposal.

    Raises ModelError when the server fails and InvalidInput when its answer is not a usable proposal.
    """
    answer = await model.complete(
        derive_messages(card), max_tokens=max_tokens, temperature=temperature, json_schema=PROPOSAL_SCHEMA
    )
    return parse_proposal(answer)


def describe_proposal(proposal: Mapping[str, Any]) -> str:
    """The proposal as lines a person reads: ``world: ...``, ``traits: a, b``."""
    lines = []
    for key in DERIVED_FIELDS:
        value = proposal.get(key)
        if value is not None:
            lines.append(f"{key}: {', '.join(value) if isinstance(value, (list, tuple)) else value}")
    return "\n".join(lines)

