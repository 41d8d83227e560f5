"""A role-play chat in the terminal on the same Engine as the bots; tokens print as they stream."""

from __future__ import annotations

import asyncio
import re
import sys
import uuid
from typing import AsyncIterator, Callable

from bots.compose import App, open_app
from bots.samples import ensure_samples
from bots.settings import Settings
from core.commands import Actor, Place
from core.engine import Reply, ReplyStatus
from core.character import Character
from core.events import ChatEvent, ConversationKey, Platform
from core.text import clean_text, one_line_name

HELP = (
    "Commands: /characters, /use NAME, /mood, /memory [forget N], /undo (take back the last exchange), /reset, "
    "/lore (list, show N, add keys=a,b; content=..., edit N field=value, remove N), /help, /quit. "
    "Anything else is said to the character."
)


class ConsoleChat:
    """One person chatting in a terminal: reads lines, prints streamed replies and command results."""

    def __init__(self, app: App, user: str, write: Callable[[str], None]) -> None:
        self.app = app
        # The name as the Discord and Telegram adapters take one in: one line, at most 64 characters,
        # control-token strings neutralised; it fills {{user}} in the greeting and names the person.
        self.user = one_line_name(clean_text(user)) or "You"
        # The person's id in storage: their name, made safe for keys.
        self.user_id = re.sub(r"[^\w.-]", "_", self.user)[:64]
        self.write = write
        # Stored ids are at most 64 characters: a long name would not fit "console-" + its id.
        self.place = Place(Platform.CONSOLE, "console", f"console-{self.user_id}"[:64], private=True)
        # Whoever sits at the terminal owns the service.
        self.actor = Actor(Platform.CONSOLE, self.user_id, self.user, is_admin=True, is_owner=True)
        self.last: Reply | None = None  # the newest reply of this session, for /undo

    async def use(self, name: str) -> bool:
        outcome = await self.app.commands.use(self.actor, self.place, name)
        self.write(outcome.message + "\n")
        if outcome.ok and outcome.character is not None and outcome.greeting is None:
            await self.recap(outcome.character)
        return outcome.ok

    async def recap(self, character: Character, turns: int = 4) -> None:
        """Where the story stopped last time: the newest few turns of the stored conversation."""
        conversation = ConversationKey(character.id, Platform.CONSOLE, self.place.channel_id, self.user_id)
        recent = await self.app.store.messages.recent(conversation, turns)
        if recent:
            self.write("(where you left off)\n")
        for message in recent:
            who = character.name if message.role == "assistant" else self.user
            self.write(f"{who}: {message.content}\n")

    async def say(self, text: str) -> None:
        event = ChatEvent(
            platform=Platform.CONSOLE,
            chat_id=self.place.chat_id,
            channel_id=self.place.channel_id,
            user_id=self.user_id,
            display_name=self.user,
            message_id=uuid.uuid4().hex,
            text=clean_text(text),
            private=True,
            addressed=True,
        )
        reply = self.app.engine.handle(event)
        self.last = reply
        started = False
        async for delta in reply:
            if not started:
                # A notice with no character behind it is printed without a speaker.
                speaker = f"{reply.character.name}: " if reply.character else ""
                if reply.greeting:
                    self.write(f"{speaker}{reply.greeting}\n")
                self.write(speaker)
                started = True
            self.write(delta)
        if started:
            self.write("\n")
            if reply.problem and reply.status in (ReplyStatus.FAILED, ReplyStatus.PARTIAL):
                self.write(f"({reply.problem})\n")  # the terminal is the operator's: say what went wrong
        elif reply.status is ReplyStatus.NO_CHARACTER:
            self.write("Pick a character first: /characters, then /use NAME.\n")

    async def command(self, line: str) -> bool:
        """Run a /command; False when the person wants to leave."""
        name, _, arg = line[1:].partition(" ")
        arg = arg.strip()
        commands = self.app.commands
        if name in ("quit", "exit", "q"):
            return False
        if name == "help":
            self.write(HELP + "\n")
        elif name == "characters":
            outcome = await commands.list_characters(self.actor)
            for c in outcome.characters:
                self.write(f"  {c.name}  ({c.profile.language}) {c.profile.world}\n")
            if not outcome.characters:
                self.write(outcome.message + "\n")
        elif name == "use":
            if not arg:
                self.write("Usage: /use NAME\n")
            else:
                await self.use(arg)
        elif name == "mood":
            await self.app.engine.drain()  # the last reply's appraisal runs in the background: show its result
            self.write((await commands.mood(self.actor, self.place, arg or None)).message + "\n")
        elif name == "undo":
            last = self.last
            if last is None or last.conversation is None or last.reply_message_id is None:
                self.write("There is no reply to take back in this session.\n")
            elif await self.app.engine.delete_reply(last.conversation, last.reply_message_id):
                self.last = None
                self.write("The last exchange is taken back (your message and the reply), and what it did to the character's mood with it.\n")
            else:
                self.write("Only the newest reply can be taken back.\n")
        elif name == "lore":
            self.write((await commands.lore(self.actor, self.place, arg)).message + "\n")
        elif name == "reset":
            self.write((await commands.reset(self.actor, self.place, arg or None)).message + "\n")
        elif name == "memory":
            await self.app.engine.drain()  # condensing runs in the background: show what it kept
            sub, _, rest = arg.partition(" ")
            if sub == "forget":
                outcome = await commands.forget_memory(self.actor, self.place, rest)
            else:
                outcome = await commands.memory(self.actor, self.place)
            self.write(outcome.message + "\n")
        else:
            self.write(f"Unknown command /{name}. {HELP}\n")
        return True

    async def run(self, lines: AsyncIterator[str]) -> None:
        self.write(HELP + "\n")
        async for line in lines:
            line = line.strip()
            if not line:
                continue
            if line.startswith("/"):
                if not await self.command(line):
                    break
            else:
                await self.say(line)


async def stdin_lines(prompt: str = "> ") -> AsyncIterator[str]:
    """Lines typed at the terminal, read in a thread so the event loop keeps running."""
    while True:
        try:
            line = await asyncio.to_thread(_read, prompt)
        except EOFError:
            return
        yield line


def _read(prompt: str) -> str:
    if sys.stdin.isatty():
        return input(prompt)
    line = sys.stdin.readline()
    if not line:
        raise EOFError
    return line


def _write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


async def run_console(settings: Settings, *, character: str | None, user: str) -> None:
    if settings.llm_url is None:
        _write("Starting the bundled model (SmolLM2-135M, a small demonstration model)...\n")
    async with open_app(settings) as app:
        await ensure_samples(app.store)
        chat = ConsoleChat(app, user, _write)
        if character:
            await chat.use(character)
        await chat.run(stdin_lines())
