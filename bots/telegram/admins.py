"""Who administers a group chat, as ``getChatMember`` says, remembered for a short while."""

from __future__ import annotations

import logging
import time

from telegram import Bot
from telegram.constants import ChatMemberStatus
from telegram.error import TelegramError

from bots.telegram.updates import Recent

log = logging.getLogger(__name__)

ADMIN_STATUSES = frozenset({ChatMemberStatus.ADMINISTRATOR, ChatMemberStatus.OWNER})


class ChatAdmins:
    """Answers "is this user an administrator or the creator of this chat?", cached for ``ttl`` seconds.

    A failed lookup counts as "no" and is not cached, so an admin can simply try again.
    """

    def __init__(self, ttl: float = 60.0, size: int = 10_000) -> None:
        self.ttl = ttl
        self._known: Recent[tuple[int, int], tuple[float, bool]] = Recent(size)

    async def is_admin(self, bot: Bot, chat_id: int, user_id: int) -> bool:
        now = time.monotonic()
        hit = self._known.get((chat_id, user_id))
        if hit is not None and hit[0] > now:
            return hit[1]
        try:
            member = await bot.get_chat_member(chat_id, user_id)
        except TelegramError as exc:
            log.warning("could not look up user %s in chat %s: %s", user_id, chat_id, exc)
            return False
        admin = member.status in ADMIN_STATUSES
        self._known.put((chat_id, user_id), (now + self.ttl, admin))
        return admin
