"""A fake Telegram Bot API on 127.0.0.1 that the real python-telegram-bot talks to through its base_url.

It keeps the chats' messages (so edits, "message is not modified" and callback buttons behave as on
Telegram), queues updates for ``getUpdates`` (offset and long-poll hold), serves files, and records
every call the bot made (method, params, time). Tests script it through attributes and helpers::

    async with FakeTelegram() as tg:
        ... ApplicationBuilder().token(tg.token).base_url(tg.base_url).base_file_url(tg.file_base_url)
        ann = tg.user(1, "Ann")
        tg.say(tg.private(ann), ann, "/start")
        await tg.wait_for(lambda: tg.calls_of("sendMessage"))

Wire facts it follows (see reference/platform_test_servers.md): requests are
``POST /bot<token>/<method>`` with form or multipart bodies, strings raw and everything else JSON per
field; answers are ``{"ok": true, "result": ...}`` or ``{"ok": false, "error_code", "description"}``
with the HTTP status PTB maps to its exceptions (400 BadRequest, 401/404 InvalidToken, 403 Forbidden).
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from typing import Any, Callable

from aiohttp import web

from bots.fakes.loopback import serve_on_loopback

TOKEN = "424242:AAFakeTokenForTests_Only-0123456789ab"
NOT_MODIFIED = (
    "Bad Request: message is not modified: specified new message content and reply markup are exactly "
    "the same as a current content and reply markup of the message"
)
# Parameters that Telegram takes as text: kept raw, never JSON-decoded.
_RAW = {"text", "caption", "callback_query_id", "file_id", "url", "secret_token", "parse_mode", "title", "description"}


@dataclass(slots=True)
class Call:
    """One Bot API call the bot made."""

    method: str
    params: dict[str, Any]
    at: float = field(default_factory=time.monotonic)


def utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def auto_entities(text: str) -> list[dict[str, Any]]:
    """The entities Telegram would mark: a leading /command and @mentions."""
    entities = []
    words, pos = text.split(" "), 0
    for i, word in enumerate(words):
        token = word.split("\n")[0]
        if i == 0 and token.startswith("/") and len(token) > 1:
            entities.append({"type": "bot_command", "offset": 0, "length": utf16_len(token)})
        elif token.startswith("@") and len(token) > 1:
            entities.append({"type": "mention", "offset": utf16_len(text[:pos]), "length": utf16_len(token)})
        pos += len(word) + 1
    return entities


# Methods that write a message, counted against Telegram's flood limits.
WRITES = {"sendMessage", "editMessageText", "editMessageReplyMarkup", "sendPhoto", "sendDocument"}


class FloodLimits:
    """Telegram's flood limits as the fake enforces them: ``per_chat`` writes per second in any chat
    and ``per_group`` per minute in a group (sliding windows); past either, 429 with ``retry_after``."""

    def __init__(self, per_chat: int = 1, per_group: int = 20) -> None:
        self.windows = {"chat": (per_chat, 1.0), "group": (per_group, 60.0)}
        self._times: dict[int, deque[float]] = defaultdict(deque)
        self.refused = 0  # 429s answered

    def judge(self, chat_id: int, now: float) -> float:
        """0.0 and counted if a write to ``chat_id`` may go now, else the seconds to retry after."""
        times = self._times[chat_id]
        while times and now - times[0] >= 60.0:
            times.popleft()
        wait = 0.0
        for kind, (count, per) in self.windows.items():
            if kind == "group" and chat_id > 0:
                continue  # a private chat has no group limit
            inside = [t for t in times if now - t < per]
            if len(inside) >= count:
                wait = max(wait, per - (now - inside[-count]))
        if wait > 0:
            self.refused += 1
            return wait
        times.append(now)
        return 0.0


class FakeTelegram:
    """The fake Bot API. Attributes to script it:

    refuse_drafts: sendMessageDraft answers 400 (a Bot API without drafts).
    members: ``{(chat_id, user_id): "administrator" | "creator" | "member" | ...}`` for getChatMember.
    files: ``{file_id: bytes}`` served by getFile and the file download route.
    failures: ``fail(method, status, description, times)`` scripts errors for the next calls.
    limits: a ``FloodLimits`` to enforce Telegram's flood limits (None: none).
    hang(*methods): from now on every request (or those methods') is taken and never answered (a Bot API that hangs); ``unanswered``
    lists those calls. ``stop()`` lets them go (closed without an answer).
    """

    def __init__(self, *, token: str = TOKEN, bot_id: int = 4242, username: str = "persona_bot") -> None:
        self.token = token
        self.me = {"id": bot_id, "is_bot": True, "first_name": "Persona", "username": username,
                   "can_join_groups": True, "can_read_all_group_messages": False, "supports_inline_queries": False}
        self.calls: list[Call] = []
        self.rejected: list[str] = []  # methods called with a wrong token
        self.refuse_drafts = False
        self.limits: FloodLimits | None = None
        # Told of every message the bot sent or edited (the method, the message as it is now).
        self.watchers: list[Callable[[str, dict[str, Any]], None]] = []
        self.members: dict[tuple[int, int], str] = {}
        self.files: dict[str, bytes] = {}
        self.failures: dict[str, deque[tuple[int, str]]] = defaultdict(deque)
        self.webhook: dict[str, Any] | None = None
        self.chats: dict[int, dict[str, Any]] = {}
        self.messages: dict[tuple[int, int], dict[str, Any]] = {}  # every message, the bot's and people's
        self._last_id: dict[int, int] = defaultdict(int)
        self._updates: list[dict[str, Any]] = []
        self._next_update = 1
        self._delivered = 0  # highest update id handed out by getUpdates
        self._arrived = asyncio.Event()
        self.holding = False  # a getUpdates request is waiting for updates
        self.polls = 0  # getUpdates requests received (``calls`` records them when they answer)
        self.conflicts = 0  # getUpdates requests that came while another one was held (Telegram: 409)
        self._poll_generation = 0
        self._request: web.Request | None = None  # the request being handed to a method
        self._held_request: web.Request | None = None
        self._runner: web.AppRunner | None = None
        self.port = 0
        self.hanging: bool | set[str] = False  # True: every method hangs; a set: those
        self.unanswered: list[Call] = []  # the calls taken while hanging, never answered
        self._released = asyncio.Event()

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> "FakeTelegram":
        app = web.Application(client_max_size=50 * 1024 * 1024)
        app.router.add_route("*", "/bot{token}/{method}", self._api)
        app.router.add_get("/file/bot{token}/{path:.+}", self._file)
        self._runner, self.port = await serve_on_loopback(app)
        return self

    async def stop(self) -> None:
        self._arrived.set()  # release a held getUpdates
        self._released.set()  # and the requests a hanging server took
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> "FakeTelegram":
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/bot"

    @property
    def file_base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/file/bot"

    # -- people, chats and what they do ------------------------------------------------------

    @staticmethod
    def user(user_id: int, first_name: str = "Ann", username: str | None = None) -> dict[str, Any]:
        user: dict[str, Any] = {"id": user_id, "is_bot": False, "first_name": first_name}
        if username:
            user["username"] = username
        return user

    def private(self, user: dict[str, Any]) -> dict[str, Any]:
        chat = {"id": user["id"], "type": "private", "first_name": user["first_name"]}
        self.chats[chat["id"]] = chat
        return chat

    def group(self, chat_id: int, title: str = "The Tavern") -> dict[str, Any]:
        chat = {"id": chat_id, "type": "supergroup", "title": title}
        self.chats[chat_id] = chat
        return chat

    def message(self, chat: dict[str, Any], sender: dict[str, Any], text: str | None = None, *,
                reply_to: int | None = None, document: dict[str, Any] | None = None,
                caption: str | None = None) -> dict[str, Any]:
        """A new message from a person (not yet delivered: see ``push``)."""
        message: dict[str, Any] = {
            "message_id": self._new_id(chat["id"]),
            "date": int(time.time()),
            "chat": chat,
            "from": sender,
        }
        if text is not None:
            message["text"] = text
            if entities := auto_entities(text):
                message["entities"] = entities
        if document is not None:
            message["document"] = document
        if caption is not None:
            message["caption"] = caption
            if entities := auto_entities(caption):
                message["caption_entities"] = entities
        if reply_to is not None:
            message["reply_to_message"] = self.messages[(chat["id"], reply_to)]
        self.messages[(chat["id"], message["message_id"])] = message
        return message

    def say(self, chat: dict[str, Any], sender: dict[str, Any], text: str, **kw: Any) -> dict[str, Any]:
        """A person sends ``text``: the message is queued as an update; returns the update."""
        return self.push({"message": self.message(chat, sender, text, **kw)})

    def send_document(self, chat: dict[str, Any], sender: dict[str, Any], content: bytes, *,
                      file_name: str = "card.json", caption: str | None = None) -> dict[str, Any]:
        file_id = f"file-{len(self.files) + 1}"
        self.files[file_id] = content
        mime = "image/png" if file_name.endswith(".png") else "application/json"
        document = {"file_id": file_id, "file_unique_id": f"u{file_id}", "file_name": file_name,
                    "mime_type": mime, "file_size": len(content)}
        return self.push({"message": self.message(chat, sender, document=document, caption=caption)})

    def press(self, sender: dict[str, Any], chat_id: int, message_id: int, data: str) -> dict[str, Any]:
        """A person presses an inline button ``data`` under message ``message_id``."""
        query = {"id": f"cq{self._next_update}", "from": sender, "chat_instance": f"ci{chat_id}",
                 "data": data, "message": self.messages[(chat_id, message_id)]}
        return self.push({"callback_query": query})

    def update(self, body: dict[str, Any]) -> dict[str, Any]:
        """Give ``body`` the next update_id without queueing it (for webhook deliveries)."""
        update = {"update_id": self._next_update, **body}
        self._next_update += 1
        return update

    def push(self, body: dict[str, Any]) -> dict[str, Any]:
        """Queue an update for getUpdates; returns it with its update_id."""
        update = self.update(body)
        self._updates.append(update)
        self._arrived.set()
        return update

    def redeliver(self, update: dict[str, Any]) -> None:
        """Deliver an already delivered update again (what Telegram does when it thinks one was lost)."""
        self._updates.append(dict(update, _again=True))
        self._arrived.set()

    def hang(self, *methods: str) -> None:
        """Take every request (or every call of ``methods``) from now on and never answer it
        (connections stay open), as a Bot API that stopped answering does. A getUpdates already held
        goes on waiting."""
        self.hanging = set(methods) or True

    def fail(self, method: str, status: int, description: str, times: int = 1) -> None:
        for _ in range(times):
            self.failures[method].append((status, description))

    # -- looking at what the bot did ---------------------------------------------------------

    def calls_of(self, method: str, chat_id: int | None = None) -> list[Call]:
        return [c for c in self.calls if c.method == method and (chat_id is None or c.params.get("chat_id") == chat_id)]

    def bot_messages(self, chat_id: int) -> list[dict[str, Any]]:
        """The bot's messages still in the chat, oldest first, as they read now."""
        return [m for (c, _), m in sorted(self.messages.items()) if c == chat_id and m["from"]["id"] == self.me["id"]]

    def texts(self, chat_id: int) -> list[str]:
        return [m.get("text", "") for m in self.bot_messages(chat_id)]

    @property
    def pending(self) -> int:
        """Updates queued and not yet confirmed by the bot (a getUpdates offset past them)."""
        return len(self._updates)

    async def wait_for(self, condition: Callable[[], Any], timeout: float = 10.0, what: str = "") -> Any:
        """Poll ``condition`` until it is truthy; fail the test after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            value = condition()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what or condition}; calls: {[c.method for c in self.calls]}")
            await asyncio.sleep(0.01)

    # -- the API ---------------------------------------------------------------------------

    async def _params(self, request: web.Request) -> dict[str, Any]:
        params: dict[str, Any] = {}
        if request.content_type == "application/json":
            body = await request.json() if request.can_read_body else {}
            return dict(body or {})
        form = await request.post()
        for key, value in form.items():
            if not isinstance(value, str):
                data = value.file.read()  # an uploaded field: text, or a file's bytes (a photo)
                try:
                    value = data.decode()
                except UnicodeDecodeError:
                    params[key] = data
                    continue
            if key in _RAW:
                params[key] = value
                continue
            try:
                params[key] = json.loads(value)
            except ValueError:
                params[key] = value
        return params

    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        if request.match_info["token"] != self.token:
            self.rejected.append(method)
            return _error(401, "Unauthorized")
        params = await self._params(request)
        if self.hanging is True or (self.hanging and method in self.hanging):
            self.unanswered.append(Call(method, params))
            await self._released.wait()
            raise web.HTTPServiceUnavailable()  # only when the fake stops: the client has long given up
        if method != "getUpdates":
            self.calls.append(Call(method, params))
        if self.failures.get(method):
            status, description = self.failures[method].popleft()
            if description == NOT_MODIFIED and method.startswith("editMessage"):
                # Telegram says "not modified" only when the message already reads so (an earlier
                # write of this text landed, its answer was lost): the message shows the new text.
                handler = getattr(self, f"_m_{method}")
                handler(params)
            return _error(status, description)
        if self.limits is not None and method in WRITES and "chat_id" in params:
            wait = self.limits.judge(int(params["chat_id"]), time.monotonic())
            if wait > 0:
                retry = max(1, math.ceil(wait))  # Telegram says whole seconds
                return web.json_response(
                    {"ok": False, "error_code": 429, "description": f"Too Many Requests: retry after {retry}",
                     "parameters": {"retry_after": retry}},
                    status=429,
                )
        handler = getattr(self, f"_m_{method}", None)
        self._request = request
        if handler is None:
            return _error(404, "Not Found: method not found")
        result = await handler(params) if asyncio.iscoroutinefunction(handler) else handler(params)
        if isinstance(result, web.Response):
            return result
        if method in WRITES and isinstance(result, dict):
            for watcher in self.watchers:
                watcher(method, result)
        return web.json_response({"ok": True, "result": result})

    async def _file(self, request: web.Request) -> web.Response:
        if request.match_info["token"] != self.token:
            return web.Response(status=401)
        file_id = request.match_info["path"].rsplit("/", 1)[-1]
        if file_id not in self.files:
            return web.Response(status=404)
        self.calls.append(Call("downloadFile", {"file_id": file_id}))
        return web.Response(body=self.files[file_id], content_type="application/octet-stream")

    # Methods, named _m_<BotApiMethod>.

    def _m_getMe(self, p: dict[str, Any]) -> Any:
        return self.me

    async def _m_getUpdates(self, p: dict[str, Any]) -> Any:
        self.polls += 1
        self._poll_generation += 1
        generation = self._poll_generation
        request, self._request = self._request, None
        held = self._held_request
        if self.holding and held is not None and held.transport is not None and not held.transport.is_closing():
            # As on Telegram: a second poller ends the one waiting with 409 Conflict (a poll whose
            # client went away does not count: that poller stopped).
            self.conflicts += 1
            self._arrived.set()
        offset = int(p.get("offset") or 0)
        self._updates = [u for u in self._updates if u.get("_again") or u["update_id"] >= offset]
        if not self._updates and p.get("timeout"):
            self._arrived.clear()
            self.holding = True  # the bot has put everything fetched so far into its queue
            self._held_request = request
            try:
                await asyncio.wait_for(self._arrived.wait(), timeout=float(p["timeout"]))
            except TimeoutError:
                pass
            finally:
                if generation == self._poll_generation:
                    self.holding = False
            if generation != self._poll_generation:
                return _error(409, "Conflict: terminated by other getUpdates request; make sure that only one bot instance is running")
        batch = self._updates[: int(p.get("limit") or 100)]
        # As on Telegram, an update stays queued until a later call's offset moves past it: a bot that
        # dies before confirming gets it again. A scripted redelivery is handed out once.
        self._updates = [u for u in self._updates if not (u.get("_again") and any(u is b for b in batch))]
        self.calls.append(Call("getUpdates", p))
        return [{k: v for k, v in u.items() if k != "_again"} for u in batch]

    def _m_sendMessage(self, p: dict[str, Any]) -> Any:
        chat_id = p["chat_id"]
        text = str(p.get("text", "")).strip()  # Telegram trims message text
        if not text:
            return _error(400, "Bad Request: message text is empty")
        if len(text) > 4096:
            return _error(400, "Bad Request: message is too long")
        chat = self.chats.get(chat_id) or {"id": chat_id, "type": "private" if chat_id > 0 else "supergroup"}
        message = {"message_id": self._new_id(chat_id), "date": int(time.time()), "chat": chat, "from": self.me, "text": text}
        if p.get("reply_markup"):
            message["reply_markup"] = p["reply_markup"]
        reply_to = (p.get("reply_parameters") or {}).get("message_id")
        if reply_to and (chat_id, reply_to) in self.messages:
            message["reply_to_message"] = {k: v for k, v in self.messages[(chat_id, reply_to)].items() if k != "reply_to_message"}
        self.messages[(chat_id, message["message_id"])] = message
        return message

    def _m_sendPhoto(self, p: dict[str, Any]) -> Any:
        """A photo upload (bytes) or a file_id sent before; the caption may be at most 1,024 characters."""
        chat_id, photo = p["chat_id"], p.get("photo")
        if isinstance(photo, bytes):
            file_id = f"photo-{len(self.files) + 1}"
            self.files[file_id] = photo
        elif isinstance(photo, str) and photo in self.files:
            file_id = photo
        else:
            return _error(400, "Bad Request: wrong file identifier/HTTP URL specified")
        caption = str(p.get("caption", ""))
        if len(caption) > 1024:
            return _error(400, "Bad Request: message caption is too long")
        chat = self.chats.get(chat_id) or {"id": chat_id, "type": "private" if chat_id > 0 else "supergroup"}
        sizes = [{"file_id": file_id, "file_unique_id": f"u{file_id}", "width": 400, "height": 600, "file_size": len(self.files[file_id])}]
        message = {"message_id": self._new_id(chat_id), "date": int(time.time()), "chat": chat, "from": self.me, "photo": sizes}
        if caption:
            message["caption"] = caption
        self.messages[(chat_id, message["message_id"])] = message
        return message

    def photos(self, chat_id: int) -> list[tuple[bytes, str]]:
        """The photos the bot sent to a chat (bytes, caption), oldest first."""
        return [
            (self.files[m["photo"][-1]["file_id"]], m.get("caption", ""))
            for m in self.bot_messages(chat_id) if "photo" in m
        ]

    def _m_sendMessageDraft(self, p: dict[str, Any]) -> Any:
        if self.refuse_drafts:
            return _error(400, "Bad Request: method sendMessageDraft is not available for this chat")
        if not p.get("draft_id"):
            return _error(400, "Bad Request: draft_id must be non-zero")
        if p["chat_id"] < 0:
            return _error(400, "Bad Request: drafts can be sent only to private chats")
        return True

    def _edit(self, p: dict[str, Any], changes: dict[str, Any]) -> Any:
        key = (p.get("chat_id"), p.get("message_id"))
        message = self.messages.get(key)
        if message is None:
            return _error(400, "Bad Request: message to edit not found")
        if "text" in changes and len(changes["text"]) > 4096:
            return _error(400, "Bad Request: MESSAGE_TOO_LONG")
        new = {**message, **changes}
        if new.get("reply_markup") is None:
            new.pop("reply_markup", None)
        if new == message:
            return _error(400, NOT_MODIFIED)
        new["edit_date"] = int(time.time())
        self.messages[key] = new
        return new

    def _m_editMessageText(self, p: dict[str, Any]) -> Any:
        return self._edit(p, {"text": str(p["text"]).strip(), "reply_markup": p.get("reply_markup")})

    def _m_editMessageReplyMarkup(self, p: dict[str, Any]) -> Any:
        return self._edit(p, {"reply_markup": p.get("reply_markup")})

    def _m_deleteMessage(self, p: dict[str, Any]) -> Any:
        return self.messages.pop((p["chat_id"], p["message_id"]), None) is not None or _error(
            400, "Bad Request: message to delete not found"
        )

    def _m_getChatMember(self, p: dict[str, Any]) -> Any:
        user_id = p["user_id"]
        user = next((m["from"] for m in self.messages.values() if m["from"]["id"] == user_id), self.user(user_id))
        status = self.members.get((p["chat_id"], user_id), "member")
        member: dict[str, Any] = {"status": status, "user": user}
        if status == "creator":
            member["is_anonymous"] = False
        elif status == "administrator":
            member.update(
                can_be_edited=False, is_anonymous=False, can_manage_chat=True, can_delete_messages=True,
                can_manage_video_chats=True, can_restrict_members=True, can_promote_members=False,
                can_change_info=True, can_invite_users=True, can_post_stories=False, can_edit_stories=False,
                can_delete_stories=False,
            )
        return member

    def _m_getFile(self, p: dict[str, Any]) -> Any:
        file_id = p["file_id"]
        if file_id not in self.files:
            return _error(400, "Bad Request: invalid file_id")
        return {"file_id": file_id, "file_unique_id": f"u{file_id}", "file_size": len(self.files[file_id]),
                "file_path": f"documents/{file_id}"}

    def _m_setWebhook(self, p: dict[str, Any]) -> Any:
        self.webhook = p
        return True

    def _m_deleteWebhook(self, p: dict[str, Any]) -> Any:
        self.webhook = None
        return True

    def _m_getWebhookInfo(self, p: dict[str, Any]) -> Any:
        return {"url": (self.webhook or {}).get("url", ""), "has_custom_certificate": False, "pending_update_count": 0}

    def _true(self, p: dict[str, Any]) -> Any:
        return True

    _m_answerCallbackQuery = _m_setMyCommands = _m_deleteMyCommands = _m_sendChatAction = _true

    # -- helpers ---------------------------------------------------------------------------

    def _new_id(self, chat_id: int) -> int:
        self._last_id[chat_id] += 1
        return self._last_id[chat_id]


def _error(status: int, description: str) -> web.Response:
    return web.json_response({"ok": False, "error_code": status, "description": description}, status=status)
