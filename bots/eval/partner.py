"""The partner: a model that plays the person the role talks to, as AutoRPEval's GPT-4o did.

Like AutoRPEval, the partner speaks first, says one short line per turn, and is asked to move the
conversation on so that the role has something to show. Only the first line of its answer is
kept (a model may go on to write the role's lines too).
"""

from __future__ import annotations

from typing import Sequence

from bots.eval.roles import EvalChat, EvalRole
from core.ports import ChatModel

PARTNER_PROMPT_EN = """You are {partner}, in the world of {world}. Stay in character: you are a person, never an AI or a language model.
Who you are:
{description}
The scene:
{scene}
You are talking with {role_name}; how close you are, from 0 (strangers) to 10 (family, lovers): {relationship}.
Say one line at a time, at most 30 words, as {partner} would say it; actions may go in parentheses.
Do not repeat what was already said: bring up something new that fits the scene, so that both of you show your character, mood and way of speaking, and keep the conversation flowing."""

PARTNER_PROMPT_ZH = """你是{partner}，生活在{world}。始终保持角色：你是一个人，绝不是人工智能或语言模型。
你的描述：
{description}
所处场景：
{scene}
你正在与{role_name}交谈，亲密度为{relationship}（0为陌生人，10为亲人或恋人）。
每次只说一句话，不超过三十个字，动作可以写在括号里。
不要重复说过的内容，要结合场景提出新的话题，让双方展现性格、情绪与说话风格，并保持对话连贯。"""

OPENING = {"en": "(The scene begins. Say your first line to {role_name}.)", "zh": "（场景开始。请对{role_name}说第一句话。）"}


def first_line(text: str, speaker: str = "") -> str:
    """The first non-empty line, stripped, without a leading ``speaker:`` (the rest is the model talking for others)."""
    for line in text.strip().splitlines():
        line = line.strip()
        if speaker and line.casefold().startswith(speaker.casefold() + ":"):
            line = line[len(speaker) + 1 :].strip()
        if line:
            return line
    return ""


def partner_messages(role: EvalRole, chat: EvalChat, lines: Sequence[tuple[str, str]]) -> list[dict[str, str]]:
    """The partner's chat: its own prompt, an opening cue, then the dialogue so far from its side."""
    template = PARTNER_PROMPT_ZH if role.profile.language == "zh" else PARTNER_PROMPT_EN
    system = template.format(
        partner=chat.partner, world=role.profile.world, description=chat.partner_description or chat.partner,
        scene=chat.scene, role_name=role.name, relationship=chat.relationship,
    )
    messages = [{"role": "system", "content": system}, {"role": "user", "content": OPENING[role.profile.language].format(role_name=role.name)}]
    for speaker, text in lines:
        messages.append({"role": "assistant" if speaker == chat.partner else "user", "content": text or "…"})
    return messages


async def partner_line(model: ChatModel, role: EvalRole, chat: EvalChat, lines: Sequence[tuple[str, str]], *, max_tokens: int, temperature: float) -> str:
    """The partner's next line."""
    answer = await model.complete(partner_messages(role, chat, lines), max_tokens=max_tokens, temperature=temperature)
    return first_line(answer, chat.partner)
