"""A Discord API on 127.0.0.1 for the real discord.py client: REST, a gateway websocket, and files.

One server holds one guild with a few channels, a thread, a DM channel and some users. Tests push
gateway events (messages, slash commands, button presses) and read back every REST request the bot
made (method, path, JSON body, arrival time). It follows the facts in
reference/platform_test_servers.md: JSON answers carry exactly ``Content-Type: application/json``;
interaction callbacks answer with a JSON body; a scripted 429 carries ``Via`` and ``retry_after``.

Point discord.py at it with ``discord.http.Route.BASE = fake.api_base`` and
``DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(fake.gateway_url)`` (``PERSONAE_DISCORD_API_BASE`` and
``PERSONAE_DISCORD_GATEWAY_URL`` do exactly that).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import json
import math
import re
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from aiohttp import WSMsgType, web

from bots.fakes.loopback import serve_on_loopback

TOKEN = "fake-bot-token.XXXXXX.yyyyyyyyyyyyyyyyyyyyyyyyyyy"
APP_ID = BOT_ID = 900000000000000010
GUILD_ID = 900000000000000001  # on shard 1 of 2: (GUILD_ID >> 22) % 2
ANNEX_GUILD = 900000000004194306  # a second guild (``add_annex``), on shard 0 of 2
# Channels of the guild
ROLEPLAY = 900000000000000200  # tests bind characters here
LOBBY = 900000000000000201
TAVERN = 900000000000000202
THREAD = 900000000000000210  # a thread of ROLEPLAY
DM = 900000000000000300  # Alice's DM channel with the bot
ANNEX = 900000000000000220  # a channel of ANNEX_GUILD
# Roles
GAME_MASTER = 900000000000000400
# Users
ALICE = 900000000000000101
BOB = 900000000000000102
OWNER = 900000000000000103
OTHER_BOT = 900000000000000104
PROXY_APP = 466378653216014359  # PluralKit's application: its webhooks post the proxied copies

MANAGE_GUILD = 1 << 5
ADMINISTRATOR = 1 << 3
EVERYONE_PERMISSIONS = 0x0000000000000400 | 0x0000000000000800 | 0x0000000000010000  # view, send, read history

_JSON = {"Content-Type": "application/json"}


def _user(user_id: int, name: str, *, bot: bool = False) -> dict[str, Any]:
    return {"id": str(user_id), "username": name, "global_name": name.title(), "discriminator": "0", "avatar": None, "bot": bot}


USERS = {
    BOT_ID: _user(BOT_ID, "personae", bot=True),
    ALICE: _user(ALICE, "alice"),
    BOB: _user(BOB, "bob"),
    OWNER: _user(OWNER, "owner"),
    OTHER_BOT: _user(OTHER_BOT, "otherbot", bot=True),
}


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat()


@dataclass(slots=True)
class Call:
    """One REST request the bot made."""

    method: str
    path: str  # below the API base, e.g. /channels/200/messages
    body: Any
    query: dict[str, str]
    at: float = field(default_factory=time.monotonic)
    files: dict[str, bytes] = field(default_factory=dict)  # uploaded with the request: file name -> bytes


@dataclass(slots=True)
class Fault:
    """A scripted error answer for the next requests matching ``method`` and ``path`` (a regex)."""

    method: str
    path: str
    status: int
    retry_after: float
    via: bool
    times: int


class RateLimits:
    """Discord's limits as the fake enforces them, with the headers discord.py reads.

    Per channel, message sends (POST) and edits (PATCH) are two buckets of ``per_channel`` requests
    per ``window_s``, each a fixed window opened by its first request (as Discord's reset works);
    all requests together at most ``global_per_s`` a second. Past a limit: 429 with ``retry_after``,
    a ``Via`` header (else discord.py takes it for a Cloudflare ban) and the bucket headers.
    """

    BUCKETS = {"POST": "c0ffee01", "PATCH": "c0ffee02"}  # bucket hashes, one per kind of write

    def __init__(self, per_channel: int = 5, window_s: float = 5.0, global_per_s: int = 50) -> None:
        self.per_channel, self.window_s, self.global_per_s = per_channel, window_s, global_per_s
        self._windows: dict[tuple[str, int], tuple[float, int]] = {}  # (method, channel) -> (opened at, used)
        self._second: deque[float] = deque()
        self.refused = 0  # 429s answered
        self.refused_global = 0

    def judge(self, method: str, channel: int | None, now: float) -> tuple[int, dict[str, str], dict[str, Any] | None]:
        """(status, headers, 429 body or None) for a request; counts it when it is let through."""
        while self._second and now - self._second[0] >= 1.0:
            self._second.popleft()
        if len(self._second) >= self.global_per_s:
            self.refused += 1
            self.refused_global += 1
            retry = 1.0 - (now - self._second[0])
            headers = {"Via": "1.1 google", "Retry-After": str(max(1, math.ceil(retry))), "X-RateLimit-Global": "true",
                       "X-RateLimit-Scope": "global"}
            return 429, headers, {"message": "You are being rate limited.", "retry_after": round(retry, 3), "global": True}
        if channel is None or method not in self.BUCKETS:
            self._second.append(now)
            return 200, {}, None
        key = (method, channel)
        opened, used = self._windows.get(key, (now, 0))
        if now - opened >= self.window_s:
            opened, used = now, 0
        reset_after = self.window_s - (now - opened)
        headers = {
            "X-RateLimit-Limit": str(self.per_channel),
            "X-RateLimit-Reset": f"{time.time() + reset_after:.3f}",
            "X-RateLimit-Reset-After": f"{reset_after:.3f}",
            "X-RateLimit-Bucket": self.BUCKETS[method],
        }
        if used >= self.per_channel:
            self.refused += 1
            headers.update({"Via": "1.1 google", "Retry-After": str(max(1, math.ceil(reset_after))),
                            "X-RateLimit-Remaining": "0", "X-RateLimit-Scope": "user"})
            return 429, headers, {"message": "You are being rate limited.", "retry_after": round(reset_after, 3), "global": False}
        self._windows[key] = (opened, used + 1)
        self._second.append(now)
        headers["X-RateLimit-Remaining"] = str(self.per_channel - used - 1)
        return 200, headers, None


@dataclass(slots=True)
class Sent:
    """An interaction the fake delivered: tests read its callbacks and follow-ups by token."""

    id: int
    token: str


class FakeDiscord:
    """A local Discord: start it, point discord.py at it, push events, read the recorded requests."""

    def __init__(self, *, token: str = TOKEN) -> None:
        self.token = token
        self.calls: list[Call] = []
        self.messages: dict[int, dict[str, Any]] = {}  # every message by id, as it is now
        self.files: dict[str, bytes] = {}
        self.downloads: list[str] = []  # names of the files fetched from the CDN-like route
        self.identifies: list[dict[str, Any]] = []
        self.commands: dict[int | None, list[dict[str, Any]]] = {}  # synced commands by guild (None: global)
        self.refuse_message_content = False  # close the gateway with 4014 when IDENTIFY asks for it
        self.faults: list[Fault] = []
        self.limits: RateLimits | None = None  # set: Discord's rate limits are enforced
        # Told of every message the bot created or edited (``"send"`` or ``"edit"``, the message as it is now).
        self.watchers: list[Callable[[str, dict[str, Any]], None]] = []
        # Channel webhooks by id (GET/POST /channels/{c}/webhooks, /webhooks/{id}/{token}...).
        self.webhooks: dict[int, dict[str, Any]] = {}
        self.refuse_webhooks = False  # answer 403 Missing Permissions to the webhook routes of channels
        self._hook_channels: dict[str, str] = {}  # webhook id -> its channel, deleted ones too
        self._sockets: list[web.WebSocketResponse] = []
        # Each connection's shard [id, count] from its IDENTIFY (None: unsharded, it gets every event).
        self.shards: dict[web.WebSocketResponse, tuple[int, int] | None] = {}
        self.guild_ids = [GUILD_ID]
        self.recommended_shards = 1  # what GET /gateway/bot answers
        self._interaction_channels: dict[str, int] = {}  # token -> channel, for follow-up messages
        self._seq = 0
        self._ids = itertools.count(900000000000100000)
        self._runner: web.AppRunner | None = None
        self.port = 0
        self.channels: dict[int, dict[str, Any]] = {
            ROLEPLAY: {"id": str(ROLEPLAY), "type": 0, "name": "roleplay", "position": 0, "guild_id": str(GUILD_ID)},
            LOBBY: {"id": str(LOBBY), "type": 0, "name": "lobby", "position": 1, "guild_id": str(GUILD_ID)},
            TAVERN: {"id": str(TAVERN), "type": 0, "name": "tavern", "position": 2, "guild_id": str(GUILD_ID)},
            THREAD: {
                "id": str(THREAD), "type": 11, "name": "side-quest", "parent_id": str(ROLEPLAY), "guild_id": str(GUILD_ID),
                "owner_id": str(ALICE), "message_count": 0, "member_count": 1,
                "thread_metadata": {"archived": False, "auto_archive_duration": 1440, "archive_timestamp": _now(), "locked": False},
            },
            DM: {"id": str(DM), "type": 1, "recipients": [USERS[ALICE]]},
        }
        self.roles = [
            {"id": str(GUILD_ID), "name": "@everyone", "permissions": str(EVERYONE_PERMISSIONS), "position": 0},
            {"id": str(GAME_MASTER), "name": "Game Master", "permissions": "0", "position": 1},
        ]
        app = web.Application()
        app.router.add_get("/gateway", self._gateway)
        app.router.add_get("/attachments/{name}", self._file)
        app.router.add_route("*", "/api/v10/{path:.*}", self._rest)
        self.app = app

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> "FakeDiscord":
        self._runner, self.port = await serve_on_loopback(self.app)
        return self

    async def stop(self) -> None:
        for ws in list(self._sockets):
            await ws.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> "FakeDiscord":
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def api_base(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/v10"

    @property
    def gateway_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/gateway"

    def add_file(self, name: str, data: bytes) -> str:
        """Serve ``data`` at a CDN-like URL and return the URL."""
        self.files[name] = data
        return f"http://127.0.0.1:{self.port}/attachments/{name}"

    def fail(self, method: str, path: str, *, status: int = 429, retry_after: float = 0.3, via: bool = True, times: int = 1) -> None:
        """Answer the next ``times`` requests matching ``method`` and ``path`` (a regex) with ``status``."""
        self.faults.append(Fault(method, path, status, retry_after, via, times))

    def next_id(self) -> int:
        return next(self._ids)

    # -- reading what the bot did ---------------------------------------------------------------

    def requests(self, method: str | None = None, path: str | None = None) -> list[Call]:
        """Recorded requests, filtered by method and by ``path`` (a regex matched in full)."""
        return [
            c for c in self.calls
            if (method is None or c.method == method) and (path is None or re.fullmatch(path, c.path))
        ]

    def posted(self, channel: int) -> list[Call]:
        """Messages the bot created in a channel (successful or not), in order."""
        return self.requests("POST", f"/channels/{channel}/messages")

    def edits(self, channel: int) -> list[Call]:
        return self.requests("PATCH", rf"/channels/{channel}/messages/\d+")

    def webhook_messages(self, channel: int) -> list[dict[str, Any]]:
        """Messages the bot's webhooks wrote in a channel (or thread), as they read now."""
        ours = {str(i) for i, hook in self.webhooks.items() if hook["application_id"] == str(APP_ID)}
        return [m for m in self.messages.values() if m["channel_id"] == str(channel) and m.get("webhook_id") in ours]

    def webhook_posts(self, channel: int | None = None) -> list[Call]:
        """Executions of channel webhooks (``POST /webhooks/{id}/{token}``), optionally of one channel's."""
        calls = [c for c in self.requests("POST", r"/webhooks/\d+/[^/]+") if c.path.split("/")[2] != str(APP_ID)]
        if channel is None:
            return calls
        return [c for c in calls if (c.query.get("thread_id") or self._hook_channels.get(c.path.split("/")[2])) == str(channel)]

    def add_webhook(self, channel: int, name: str = "personae") -> int:
        """A webhook of the bot in ``channel``, as one made in an earlier run; returns its id."""
        self._channel_webhooks("POST", channel, {"name": name})
        return max(self.webhooks)

    def webhook_says(self, webhook_id: int, content: str, username: str) -> dict[str, Any]:
        """A message the webhook wrote (as if through ``POST /webhooks/{id}/{token}``), without a request."""
        hook = self.webhooks[webhook_id]
        message = self._create(int(hook["channel_id"]), {"content": content}, author=BOT_ID)
        message["author"] = {"id": hook["id"], "username": username, "discriminator": "0000", "avatar": None, "bot": True}
        message["webhook_id"], message["application_id"] = hook["id"], hook["application_id"]
        return message

    def delete_webhook(self, webhook_id: int) -> None:
        """Someone deleted the webhook in Discord: its routes answer 404 Unknown Webhook."""
        del self.webhooks[webhook_id]

    async def proxy(
        self, original: dict[str, Any], name: str, content: str, *, delete: bool = True, application: int = PROXY_APP
    ) -> dict[str, Any]:
        """What PluralKit does with ``original``: post ``content`` through its own webhook under
        ``name``, then delete the original. Returns the copy's payload."""
        channel = int(original["channel_id"])
        hook_id = 900000000000009000 + channel % 1000
        copy = {
            **self.message_payload(channel, ALICE, content),
            "author": {"id": str(hook_id), "username": name, "discriminator": "0000", "avatar": None, "bot": True},
            "webhook_id": str(hook_id),
            "application_id": str(application),
        }
        copy.pop("member", None)
        self.messages[int(copy["id"])] = copy
        await self.dispatch("MESSAGE_CREATE", copy)
        if delete:
            await self.delete_message(original)
        return copy

    async def delete_message(self, message: dict[str, Any]) -> None:
        self.messages.pop(int(message["id"]), None)
        data = {"id": message["id"], "channel_id": message["channel_id"]}
        if "guild_id" in message:
            data["guild_id"] = message["guild_id"]
        await self.dispatch("MESSAGE_DELETE", data)

    def bot_messages(self, channel: int) -> list[dict[str, Any]]:
        """The bot's messages in a channel as they read now (after edits, without deleted ones)."""
        return [m for m in self.messages.values() if m["channel_id"] == str(channel) and m["author"]["id"] == str(BOT_ID)]

    def callbacks(self, interaction: Sent) -> list[Call]:
        return self.requests("POST", f"/interactions/{interaction.id}/{re.escape(interaction.token)}/callback")

    def followups(self, interaction: Sent) -> list[Call]:
        return self.requests("POST", f"/webhooks/{APP_ID}/{re.escape(interaction.token)}")

    async def wait_for(self, condition: Callable[[], Any], *, timeout: float = 10.0, what: str = "condition") -> Any:
        """Poll ``condition`` until it returns something truthy; fail the test after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while True:
            result = condition()
            if result:
                return result
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            await asyncio.sleep(0.01)

    def answer_text(self, interaction: Sent) -> str | None:
        """The text of the first follow-up (or message callback) the bot gave to an interaction, if any."""
        for call in self.followups(interaction):
            return call.body.get("content") or ""
        for call in self.callbacks(interaction):
            if call.body.get("type") == 4:
                return call.body["data"].get("content") or ""
        return None

    async def answer_to(self, interaction: Sent, *, timeout: float = 10.0) -> str:
        """Wait for the bot's answer to an interaction and return its text."""
        await self.wait_for(lambda: self.answer_text(interaction) is not None, timeout=timeout, what="an answer")
        return self.answer_text(interaction) or ""

    # -- gateway events -------------------------------------------------------------------------

    async def close_gateway(self, code: int, reason: str = "") -> None:
        """Close every gateway connection with ``code`` (4010-4014 are ones discord.py does not recover from)."""
        for ws in list(self._sockets):
            await ws.close(code=code, message=reason.encode())

    async def dispatch(self, event: str, data: dict[str, Any]) -> None:
        """Send an event to the connections whose shard carries it: a guild's events go to shard
        ``(guild_id >> 22) % count``, direct messages to shard 0, everything to an unsharded one."""
        self._seq += 1
        frame = json.dumps({"op": 0, "t": event, "s": self._seq, "d": data})
        guild = data.get("id") if event == "GUILD_CREATE" else data.get("guild_id")
        for ws in list(self._sockets):
            if self._carries(ws, int(guild) if guild else None):
                await ws.send_str(frame)

    def _carries(self, ws: web.WebSocketResponse, guild_id: int | None) -> bool:
        shard = self.shards.get(ws)
        if shard is None:
            return True
        shard_id, count = shard
        return shard_id == ((guild_id >> 22) % count if guild_id is not None else 0)

    def connected_shards(self) -> list[tuple[int, int] | None]:
        """The shard of each open gateway connection."""
        return [self.shards.get(ws) for ws in self._sockets]

    def add_person(self, user_id: int, name: str) -> None:
        """One more person who can write in the guild (``say(channel, user_id, ...)``)."""
        USERS[user_id] = _user(user_id, name)

    def add_annex(self) -> None:
        """A second guild, ANNEX_GUILD with channel ANNEX (on the other shard of two than GUILD_ID)."""
        self.guild_ids.append(ANNEX_GUILD)
        self.channels[ANNEX] = {"id": str(ANNEX), "type": 0, "name": "annex", "position": 0, "guild_id": str(ANNEX_GUILD)}

    def message_payload(
        self,
        channel: int,
        author: int,
        content: str,
        *,
        message_id: int | None = None,
        mentions: Iterable[int] = (),
        reply_to: int | None = None,
        attachments: Iterable[dict[str, Any]] = (),
        type: int = 0,
    ) -> dict[str, Any]:
        """A MESSAGE_CREATE payload as Discord sends it for a person's (or a bot's) message."""
        message: dict[str, Any] = {
            "id": str(message_id or self.next_id()),
            "type": 19 if reply_to is not None and type == 0 else type,
            "content": content,
            "channel_id": str(channel),
            "author": USERS[author],
            "attachments": list(attachments),
            "embeds": [],
            "mentions": [USERS[m] for m in mentions],
            "mention_roles": [],
            "mention_everyone": False,
            "pinned": False,
            "tts": False,
            "timestamp": _now(),
            "edited_timestamp": None,
            "flags": 0,
            "components": [],
        }
        if self._in_guild(channel):
            message["guild_id"] = self.channels.get(channel, {}).get("guild_id", str(GUILD_ID))
            message["member"] = {"roles": [], "flags": 0, "joined_at": _now(), "deaf": False, "mute": False}
        if reply_to is not None:
            message["message_reference"] = {"type": 0, "message_id": str(reply_to), "channel_id": str(channel)}
            message["referenced_message"] = self.messages.get(reply_to)
        return message

    async def say(self, channel: int, author: int, content: str, **kw: Any) -> dict[str, Any]:
        """Dispatch a MESSAGE_CREATE; returns the payload (dispatch it again to redeliver)."""
        message = self.message_payload(channel, author, content, **kw)
        self.messages[int(message["id"])] = message
        await self.dispatch("MESSAGE_CREATE", message)
        return message

    def _interaction(self, kind: int, *, user: int, channel: int, permissions: int, roles: Iterable[int]) -> dict[str, Any]:
        interaction_id = self.next_id()
        payload: dict[str, Any] = {
            "id": str(interaction_id),
            "application_id": str(APP_ID),
            "type": kind,
            "token": f"itoken-{interaction_id}",
            "version": 1,
            "attachment_size_limit": 8 * 1024 * 1024,
            "locale": "en-US",
            "channel": self.channels[channel],
            "channel_id": str(channel),
            "app_permissions": str(EVERYONE_PERMISSIONS),
            "entitlements": [],
        }
        self._interaction_channels[payload["token"]] = channel
        if self._in_guild(channel):
            payload["guild_id"] = str(GUILD_ID)
            payload["guild_locale"] = "en-US"
            payload["context"] = 0
            payload["member"] = {
                "user": USERS[user],
                "roles": [str(r) for r in roles],
                "flags": 0,
                "joined_at": _now(),
                "deaf": False,
                "mute": False,
                "permissions": str(permissions),
            }
        else:
            payload["user"] = USERS[user]
            payload["context"] = 1
        return payload

    async def slash(
        self,
        command: str,
        options: dict[str, Any] | None = None,
        *,
        user: int = ALICE,
        channel: int = ROLEPLAY,
        permissions: int = EVERYONE_PERMISSIONS,
        roles: Iterable[int] = (),
        attachments: dict[str, tuple[str, bytes]] | None = None,
        focused: str | None = None,
    ) -> Sent:
        """Dispatch a slash command; ``command`` may be "character import". Attachments: option -> (filename, bytes).

        ``focused`` names the option being typed: the event is then an autocomplete request (type 4).
        """
        name, _, sub = command.partition(" ")
        resolved: dict[str, Any] = {}
        opts = [_option(k, v) for k, v in (options or {}).items()]
        for option in opts:
            if option["name"] == focused:
                option["focused"] = True
        for option, (filename, data) in (attachments or {}).items():
            attachment_id = str(self.next_id())
            url = self.add_file(f"{attachment_id}-{filename}", data)
            resolved.setdefault("attachments", {})[attachment_id] = {
                "id": attachment_id, "filename": filename, "size": len(data), "url": url, "proxy_url": url,
                "content_type": "image/png" if filename.endswith(".png") else "application/json",
            }
            opts.append({"name": option, "type": 11, "value": attachment_id})
        if sub:
            opts = [{"name": sub, "type": 1, "options": opts}]
        payload = self._interaction(4 if focused else 2, user=user, channel=channel, permissions=permissions, roles=roles)
        payload["data"] = {"id": str(self.next_id()), "name": name, "type": 1, "options": opts}
        if resolved:
            payload["data"]["resolved"] = resolved
        if self._in_guild(channel) and any(c["name"] == name for c in self.commands.get(GUILD_ID, ())):
            payload["data"]["guild_id"] = str(GUILD_ID)
        await self.dispatch("INTERACTION_CREATE", payload)
        return Sent(int(payload["id"]), payload["token"])

    async def press(self, message_id: int, *, user: int, custom_id: str | None = None) -> Sent:
        """Dispatch a button press on a message the bot sent: its first button, or a button with
        ``custom_id`` as a Discord client still showing an older version of the message would send."""
        message = self.messages[message_id]
        if custom_id is None:
            custom_id = message["components"][0]["components"][0]["custom_id"]
        else:
            button = {"type": 2, "style": 2, "label": "Regenerate", "custom_id": custom_id}
            message = {**message, "components": [{"type": 1, "components": [button]}]}
        channel = int(message["channel_id"])
        payload = self._interaction(3, user=user, channel=channel, permissions=EVERYONE_PERMISSIONS, roles=())
        payload["message"] = message
        payload["data"] = {"custom_id": custom_id, "component_type": 2}
        await self.dispatch("INTERACTION_CREATE", payload)
        return Sent(int(payload["id"]), payload["token"])

    def _in_guild(self, channel: int) -> bool:
        return "guild_id" in self.channels.get(channel, {"guild_id": GUILD_ID})

    # -- the gateway ----------------------------------------------------------------------------

    def _guild(self, guild_id: int = GUILD_ID) -> dict[str, Any]:
        mine = [c for c in self.channels.values() if c.get("guild_id") == str(guild_id)]
        channels = [c for c in mine if c["type"] in (0, 2, 4, 5)]
        threads = [c for c in mine if c["type"] in (10, 11, 12)]
        return {
            "id": str(guild_id), "name": "The Stage" if guild_id == GUILD_ID else "The Annex", "owner_id": str(OWNER), "member_count": 4, "large": False,
            "features": [], "emojis": [], "stickers": [],
            "roles": self.roles if guild_id == GUILD_ID else [{**self.roles[0], "id": str(guild_id)}], "channels": channels, "threads": threads,
            "members": [{"user": USERS[BOT_ID], "roles": [], "flags": 0, "joined_at": _now(), "deaf": False, "mute": False}],
            "voice_states": [], "presences": [], "stage_instances": [], "guild_scheduled_events": [], "soundboard_sounds": [],
            "joined_at": _now(), "unavailable": False, "premium_tier": 0, "preferred_locale": "en-US",
        }

    async def _gateway(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_str(json.dumps({"op": 10, "d": {"heartbeat_interval": 41250}}))
        try:
            async for frame in ws:
                if frame.type != WSMsgType.TEXT:
                    continue
                message = json.loads(frame.data)
                op = message.get("op")
                if op == 1:
                    await ws.send_str(json.dumps({"op": 11}))
                elif op == 2:
                    await self._identify(ws, message["d"])
                elif op == 6:
                    self._sockets.append(ws)
                    self._seq += 1
                    await ws.send_str(json.dumps({"op": 0, "t": "RESUMED", "s": self._seq, "d": {}}))
        finally:
            if ws in self._sockets:
                self._sockets.remove(ws)
            self.shards.pop(ws, None)
        return ws

    async def _identify(self, ws: web.WebSocketResponse, identify: dict[str, Any]) -> None:
        self.identifies.append(identify)
        if identify.get("token") != self.token:
            await ws.close(code=4004, message=b"Authentication failed.")
            return
        if self.refuse_message_content and identify.get("intents", 0) & (1 << 15):
            await ws.close(code=4014, message=b"Disallowed intent(s).")
            return
        shard = identify.get("shard")
        self.shards[ws] = (int(shard[0]), int(shard[1])) if shard else None
        guilds = [g for g in self.guild_ids if self._carries(ws, g)]
        self._seq += 1
        ready = {
            "v": 10,
            "user": {**USERS[BOT_ID], "verified": True, "mfa_enabled": False, "flags": 0},
            "session_id": f"session-{self._seq}",
            "resume_gateway_url": self.gateway_url,
            "guilds": [{"id": str(g), "unavailable": True} for g in guilds],
            "application": {"id": str(APP_ID), "flags": 0},
            "private_channels": [],
        }
        if shard:
            ready["shard"] = [int(shard[0]), int(shard[1])]
        await ws.send_str(json.dumps({"op": 0, "t": "READY", "s": self._seq, "d": ready}))
        self._sockets.append(ws)
        for guild in guilds:
            self._seq += 1
            await ws.send_str(json.dumps({"op": 0, "t": "GUILD_CREATE", "s": self._seq, "d": self._guild(guild)}))

    # -- REST -----------------------------------------------------------------------------------

    async def _file(self, request: web.Request) -> web.Response:
        self.downloads.append(request.match_info["name"])
        data = self.files.get(request.match_info["name"])
        if data is None:
            return web.Response(status=404)
        return web.Response(body=data, headers={"Content-Type": "application/octet-stream"})

    async def _rest(self, request: web.Request) -> web.StreamResponse:
        path = "/" + request.match_info["path"]
        raw = await request.read()
        body: Any = None
        files: dict[str, bytes] = {}
        if raw:
            if request.content_type == "application/json":
                body = json.loads(raw)
            else:  # multipart: discord.py puts the JSON in a payload_json field, files in files[n]
                match = re.search(rb'name="payload_json"\r\n(?:[^\r\n]+\r\n)*\r\n(.*?)\r\n--', raw, re.S)
                body = json.loads(match.group(1)) if match else raw.decode("utf-8", "replace")
                boundary = re.search(r'boundary="?([^";]+)"?', request.headers.get("Content-Type", ""))
                files = _uploaded_files(raw, boundary.group(1) if boundary else "")
        self.calls.append(Call(request.method, path, body, dict(request.query), files=files))
        is_webhook = path.startswith(("/webhooks/", "/interactions/"))
        if not is_webhook and request.headers.get("Authorization") != f"Bot {self.token}":
            return _json({"message": "401: Unauthorized", "code": 0}, status=401)
        for fault in self.faults:
            if fault.times > 0 and fault.method == request.method and re.fullmatch(fault.path, path):
                fault.times -= 1
                headers = {"Via": "1.1 google"} if fault.via else {}
                return _json(
                    {"message": "You are being rate limited.", "retry_after": fault.retry_after, "global": False},
                    status=fault.status,
                    headers=headers,
                )
        query = dict(request.query)
        if self.limits is None:
            return await self._route(request.method, path, body, query, files)
        status, headers, refusal = self.limits.judge(request.method, self._limited_channel(path, query), time.monotonic())
        if refusal is not None:
            return _json(refusal, status=status, headers=headers)
        response = await self._route(request.method, path, body, query, files)
        if not path.startswith("/webhooks/"):
            # A webhook's answers carry no bucket headers here: they would describe the channel's
            # buckets, not the webhook's own (looser) one, and discord.py's webhook adapter holds every
            # later write of that webhook until a bucket it reads as empty resets.
            response.headers.update(headers)
        return response

    def _limited_channel(self, path: str, query: dict[str, str]) -> int | None:
        """The channel whose write buckets a request counts against, or None (not a message write).

        A channel webhook's execute (POST) and message edits (PATCH) count against the channel's own
        send and edit buckets, as the bot's writes there do. (Discord gives the webhook routes buckets
        of their own; one shared count is the stricter rule, and the one the client paces by.)
        """
        parts = path.strip("/").split("/")
        if len(parts) >= 3 and parts[0] == "channels" and parts[2] == "messages":
            return int(parts[1])
        if len(parts) >= 3 and parts[0] == "webhooks" and parts[1].isdigit() and int(parts[1]) in self.webhooks:
            if len(parts) == 3 or (len(parts) == 5 and parts[3] == "messages"):
                thread = query.get("thread_id")
                return int(thread) if thread else int(self.webhooks[int(parts[1])]["channel_id"])
        return None

    async def _route(
        self, method: str, path: str, body: Any, query: dict[str, str] | None = None, files: dict[str, bytes] | None = None
    ) -> web.Response:
        parts = path.strip("/").split("/")
        query = query or {}
        if parts[0] == "channels" and len(parts) == 3 and parts[2] == "webhooks":
            return self._channel_webhooks(method, int(parts[1]), body)
        if parts[0] == "webhooks" and len(parts) >= 3 and parts[1].isdigit() and int(parts[1]) != APP_ID:
            return self._execute(method, parts, body, query)
        if path == "/users/@me":
            return _json(USERS[BOT_ID])
        if path == "/oauth2/applications/@me":
            return _json({
                "id": str(APP_ID), "name": "personae", "description": "", "icon": None, "bot_public": True,
                "bot_require_code_grant": False, "verify_key": "0" * 64, "owner": USERS[OWNER], "flags": 0,
            })
        if path in ("/gateway", "/gateway/bot"):
            return _json({"url": self.gateway_url, "shards": self.recommended_shards, "session_start_limit": {"total": 1000, "remaining": 1000, "reset_after": 0, "max_concurrency": 1}})
        if parts[0] == "applications" and parts[-1] == "commands":
            guild = int(parts[3]) if len(parts) == 5 else None
            if method == "PUT":
                echoed = [
                    {"type": 1, **c, "id": str(self.next_id()), "application_id": str(APP_ID), "version": "1", **({"guild_id": str(guild)} if guild else {})}
                    for c in body
                ]
                self.commands[guild] = echoed
                return _json(echoed)
            return _json(self.commands.get(guild, []))
        if parts[0] == "channels" and len(parts) == 2 and method == "GET":
            channel = self.channels.get(int(parts[1]))
            return _json(channel) if channel else _json({"message": "Unknown Channel", "code": 10003}, status=404)
        if parts[0] == "channels" and len(parts) >= 3:
            channel = int(parts[1])
            if parts[2] == "typing":
                return web.Response(status=204)
            if parts[2] == "messages" and len(parts) == 3 and method == "POST":
                return _json(self._create(channel, body, author=BOT_ID, files=files))
            if parts[2] == "messages" and len(parts) == 4:
                message = self.messages.get(int(parts[3]))
                if message is None or message["channel_id"] != str(channel):
                    return _json({"message": "Unknown Message", "code": 10008}, status=404)
                own = message["author"]["id"] == str(BOT_ID) and not message.get("webhook_id")
                if method == "PATCH":
                    if not own:  # as Discord: only the author edits, a webhook's messages through the webhook
                        return _json({"message": "Cannot edit a message authored by another user", "code": 50005}, status=403)
                    return _json(self._edit(message, body))
                if method == "DELETE":
                    if not own:  # others' messages need Manage Messages, which the bot is not given
                        return _json({"message": "Missing Permissions", "code": 50013}, status=403)
                    del self.messages[int(parts[3])]
                    return web.Response(status=204)
                if method == "GET":
                    return _json(message)
        if parts[0] == "interactions" and parts[-1] == "callback":
            kind = body.get("type")
            data = body.get("data") or {}
            return _json({
                "interaction": {
                    "id": parts[1], "type": 2, "response_message_loading": kind == 5,
                    "response_message_ephemeral": bool(data.get("flags", 0) & 64),
                }
            })
        if parts[0] == "webhooks" and len(parts) >= 3:
            channel = self._interaction_channels.get(parts[2], ROLEPLAY)
            if method in ("POST", "PATCH"):
                return _json(self._create(channel, body, author=APP_ID, webhook=True))
            return web.Response(status=204)
        return _json({"message": f"404: Not Found ({method} {path})", "code": 0}, status=404)

    def _channel_webhooks(self, method: str, channel: int, body: Any) -> web.Response:
        """GET (list) and POST (create) a channel's webhooks; 403 while ``refuse_webhooks``."""
        if self.refuse_webhooks:
            return _json({"message": "Missing Permissions", "code": 50013}, status=403)
        if channel not in self.channels or "guild_id" not in self.channels[channel]:
            return _json({"message": "Unknown Channel", "code": 10003}, status=404)
        if method == "GET":
            return _json([h for h in self.webhooks.values() if h["channel_id"] == str(channel)])
        if method == "POST":
            hook_id = self.next_id()
            hook = {
                "id": str(hook_id), "type": 1, "guild_id": self.channels[channel]["guild_id"], "channel_id": str(channel),
                "user": USERS[BOT_ID], "name": body.get("name") or "webhook", "avatar": None,
                "token": f"whtoken-{hook_id}", "application_id": str(APP_ID),
            }
            self.webhooks[hook_id] = hook
            self._hook_channels[hook["id"]] = hook["channel_id"]
            return _json(hook)
        return _json({"message": "405: Method Not Allowed", "code": 0}, status=405)

    def _execute(self, method: str, parts: list[str], body: Any, query: dict[str, str]) -> web.Response:
        """A channel webhook's routes: execute (POST, ``?wait=1``, ``thread_id``), and GET, PATCH,
        DELETE of its messages; 404 Unknown Webhook once deleted (``delete_webhook``)."""
        hook = self.webhooks.get(int(parts[1]))
        if hook is None or hook["token"] != parts[2]:
            return _json({"message": "Unknown Webhook", "code": 10015}, status=404)
        channel = int(query.get("thread_id") or hook["channel_id"])
        if len(parts) == 3 and method == "POST":
            message = self._create(channel, body, author=BOT_ID)
            message["author"] = {
                "id": hook["id"], "username": body.get("username") or hook["name"], "discriminator": "0000",
                "avatar": None, "bot": True,
            }
            message["webhook_id"] = hook["id"]
            message["application_id"] = hook["application_id"]
            message["avatar_url"] = body.get("avatar_url")  # not in Discord's answer: kept for the tests
            message.pop("message_reference", None)
            return _json(message) if query.get("wait") in ("1", "true", "True") else web.Response(status=204)
        if len(parts) == 5 and parts[3] == "messages":
            message = self.messages.get(int(parts[4]))
            if message is None or message.get("webhook_id") != hook["id"] or message["channel_id"] != str(channel):
                return _json({"message": "Unknown Message", "code": 10008}, status=404)
            if method == "PATCH":
                return _json(self._edit(message, body))
            if method == "DELETE":
                del self.messages[int(parts[4])]
                return web.Response(status=204)
            if method == "GET":
                return _json(message)
        return _json({"message": "405: Method Not Allowed", "code": 0}, status=405)

    def _create(
        self, channel: int, body: dict[str, Any], *, author: int, webhook: bool = False, files: dict[str, bytes] | None = None
    ) -> dict[str, Any]:
        message_id = self.next_id()
        attachments = []
        for name, data in (files or {}).items():
            attachment_id = self.next_id()
            # Like Discord's: a link that expires (``ex``, hex seconds), signed.
            url = self.add_file(f"{attachment_id}-{name}", data) + f"?ex={int(time.time()) + 86400:x}&is={int(time.time()):x}&hm=00"
            attachments.append({"id": str(attachment_id), "filename": name, "size": len(data), "url": url, "proxy_url": url})
        message: dict[str, Any] = {
            "id": str(message_id), "type": 0, "content": body.get("content") or "",
            "channel_id": str(channel), "author": USERS[author],
            "attachments": attachments, "embeds": body.get("embeds") or [], "mentions": [], "mention_roles": [],
            "mention_everyone": False, "pinned": False, "tts": False, "timestamp": _now(), "edited_timestamp": None,
            "flags": body.get("flags", 0), "components": body.get("components") or [],
        }
        if self._in_guild(channel):
            message["guild_id"] = self.channels.get(channel, {}).get("guild_id", str(GUILD_ID))
        if body.get("message_reference"):
            message["type"] = 19
            message["message_reference"] = body["message_reference"]
            message["referenced_message"] = self.messages.get(int(body["message_reference"]["message_id"]))
        if webhook:
            message["webhook_id"] = str(APP_ID)
        else:
            self.messages[message_id] = message
            for watcher in self.watchers:
                watcher("send", message)
        return message

    def _edit(self, message: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
        for key in ("content", "components", "embeds", "flags"):
            if key in body:
                message[key] = body[key] if body[key] is not None else ([] if key != "content" else "")
        message["edited_timestamp"] = _now()
        for watcher in self.watchers:
            watcher("edit", message)
        return message


def _uploaded_files(raw: bytes, boundary: str) -> dict[str, bytes]:
    """The files of a multipart body, by file name."""
    files: dict[str, bytes] = {}
    if not boundary:
        return files
    for part in raw.split(b"--" + boundary.encode())[1:]:
        head, sep, data = part.partition(b"\r\n\r\n")
        name = re.search(rb'filename="([^"]*)"', head)
        if sep and name:
            files[name.group(1).decode()] = data[:-2] if data.endswith(b"\r\n") else data
    return files


def _option(name: str, value: Any) -> dict[str, Any]:
    kind = 5 if isinstance(value, bool) else 4 if isinstance(value, int) else 3
    return {"name": name, "type": kind, "value": value}


def _json(data: Any, *, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, body=json.dumps(data).encode(), headers={**_JSON, **(headers or {})})
