"""Private chats: picking a character, drafts while the reply streams, the final message."""

from __future__ import annotations

import json

import pytest

from bots.streaming import EditBudget
from bots.telegram.drafts import DraftStream
from core.engine import NOTICE_RATE, NOTICE_UNAVAILABLE
from tests.telegram.conftest import FAST, OWNER_ID, Harness, running_bot
from tests.texts import just_over, sentences

LONG_REPLY = " ".join(f"Line {i} of the soliloquy, spoken slowly." for i in range(40))


async def pick(bot: Harness, user_id: int = 11, name: str = "Ann", character: str = "Hamlet") -> dict:
    """A person opens a private chat and picks ``character`` with /use; returns the chat."""
    tg = bot.tg
    person = tg.user(user_id, name)
    chat = tg.private(person)
    tg.say(chat, person, f"/use {character}")
    await bot.idle()
    assert tg.texts(chat["id"])[-1].startswith(f"You are now talking to {character}."), tg.texts(chat["id"])
    return chat


def person_of(chat: dict) -> dict:
    return {"id": chat["id"], "is_bot": False, "first_name": chat["first_name"]}


async def test_start_lists_public_characters_and_a_button_picks_one(bot: Harness) -> None:
    tg = bot.tg
    await bot.add_character("Hamlet", greeting="Who's there?")
    await bot.add_character("Ophelia")
    await bot.add_character("Claudius", public=False)
    ann = tg.user(11, "Ann")
    chat = tg.private(ann)
    tg.say(chat, ann, "/start")
    await bot.idle()
    (greeting,) = tg.bot_messages(chat["id"])
    buttons = [row[0] for row in greeting["reply_markup"]["inline_keyboard"]]
    assert [b["text"] for b in buttons] == ["Hamlet", "Ophelia"]
    hamlet = buttons[0]
    assert hamlet["callback_data"].startswith("use:")

    tg.press(ann, chat["id"], greeting["message_id"], hamlet["callback_data"])
    await bot.idle()
    assert len(tg.calls_of("answerCallbackQuery")) == 1
    assert tg.texts(chat["id"])[-1] == "You are now talking to Hamlet.\n\nHamlet: Who's there?"

    tg.say(chat, ann, "Good evening, my lord.")
    await bot.idle()
    assert tg.texts(chat["id"])[-1] == bot.tgi.reply


@pytest.mark.parametrize("backends", ["postgresql-redis", "postgresql-memory", "sqlite-redis", "sqlite-memory"], indirect=True)
async def test_a_reply_streams_through_drafts_and_ends_as_one_message(bot: Harness) -> None:
    tg, tgi = bot.tg, bot.tgi
    await bot.add_character("Hamlet")
    chat = await pick(bot)
    tgi.script(reply="To be, or not to be, that is the question: whether 'tis nobler in the mind to suffer.", token_delay=0.04)
    tg.say(chat, person_of(chat), "What troubles you?")
    await bot.idle()

    drafts = tg.calls_of("sendMessageDraft", chat["id"])
    assert len(drafts) >= 2, "the reply should be previewed while it streams"
    assert {d.params["draft_id"] for d in drafts} != {0} and len({d.params["draft_id"] for d in drafts}) == 1
    shown = [d.params["text"] for d in drafts]
    assert all(later.startswith(earlier) for earlier, later in zip(shown, shown[1:])), "drafts only grow"
    assert all("parse_mode" not in d.params for d in drafts)

    final = tg.calls_of("sendMessage", chat["id"])[-1]
    assert final.at > drafts[-1].at
    assert final.params["text"] == tgi.reply
    assert "parse_mode" not in final.params
    (button,) = final.params["reply_markup"]["inline_keyboard"][0]
    assert button["callback_data"].startswith("regen:")
    assert not tg.calls_of("editMessageText", chat["id"]), "private chats use drafts, not edits"


async def test_drafts_are_paced_per_chat(bot: Harness, sent, monkeypatch: pytest.MonkeyPatch) -> None:
    # Pacing is the adapter's decision: when the chat's draft budget let each draft go. When the
    # request then reached python-telegram-bot's post varies with the event loop's load, so gaps
    # between posts are no measure of it (they once came 0.176 s apart against 0.2 s, under load).
    budgets: list[EditBudget] = []
    grants: list[tuple[EditBudget, float]] = []
    made, take = DraftStream.__init__, EditBudget.take

    def making(self: DraftStream, **kw) -> None:
        budgets.append(kw["budget"])
        made(self, **kw)

    async def taking(self: EditBudget, *args, **kw) -> float:
        stamp = await take(self, *args, **kw)
        grants.append((self, stamp))
        return stamp

    monkeypatch.setattr(DraftStream, "__init__", making)
    monkeypatch.setattr(EditBudget, "take", taking)
    tg, tgi = bot.tg, bot.tgi
    await bot.add_character("Hamlet")
    chat = await pick(bot)
    tgi.script(reply=" ".join(["word"] * 30), token_delay=0.03)  # about 0.9 s of streaming
    tg.say(chat, person_of(chat), "Speak.")
    await bot.idle()
    (budget,) = set(budgets)
    granted = [stamp for b, stamp in grants if b is budget]
    posted = [c.at for c in sent if c.method == "sendMessageDraft" and c.params.get("chat_id") == chat["id"]]
    assert len(posted) >= 3
    # Every draft the fake received was granted by the chat's budget, and went out after its grant.
    assert len(granted) == len(posted) == len(tg.calls_of("sendMessageDraft", chat["id"]))
    assert all(at >= stamp for at, stamp in zip(posted, granted))
    gaps = [b - a for a, b in zip(granted, granted[1:])]
    assert min(gaps) >= FAST.draft_interval - 1e-9, gaps


async def test_refused_drafts_fall_back_to_send_then_edit_for_the_rest_of_the_process(bot: Harness) -> None:
    tg, tgi = bot.tg, bot.tgi
    tg.refuse_drafts = True
    await bot.add_character("Hamlet")
    chat = await pick(bot)
    tgi.script(reply="Words, words, words. " * 5, token_delay=0.03)
    tg.say(chat, person_of(chat), "What do you read, my lord?")
    await bot.idle()
    assert len(tg.calls_of("sendMessageDraft")) == 1
    assert tg.texts(chat["id"])[-1] == tgi.reply.strip()
    assert tg.calls_of("editMessageText", chat["id"]), "the fallback streams by editing"

    tg.say(chat, person_of(chat), "And now?")
    await bot.idle()
    assert len(tg.calls_of("sendMessageDraft")) == 1, "a refusal is remembered: no second try"
    assert tg.texts(chat["id"])[-1] == tgi.reply.strip()


async def test_a_person_without_a_character_is_offered_the_list(bot: Harness) -> None:
    tg = bot.tg
    await bot.add_character("Hamlet")
    bob = tg.user(12, "Bob")
    chat = tg.private(bob)
    tg.say(chat, bob, "hello?")
    await bot.idle()
    (offer,) = tg.bot_messages(chat["id"])
    assert offer["text"].startswith("Pick a character first")
    assert offer["reply_markup"]["inline_keyboard"][0][0]["text"] == "Hamlet"
    assert bot.tgi.count("/v1/chat/completions") == 0


async def test_a_long_reply_is_split_into_messages(bot: Harness) -> None:
    tg, tgi = bot.tg, bot.tgi
    await bot.add_character("Hamlet")
    chat = await pick(bot)
    tgi.script(reply=LONG_REPLY * 4)  # about 6,600 characters
    tg.say(chat, person_of(chat), "Go on.")
    await bot.idle()
    finals = [c.params["text"] for c in tg.calls_of("sendMessage", chat["id"])][1:]  # after the /use answer
    assert len(finals) == 2 and all(len(t) <= 4096 for t in finals)
    assert " ".join(finals).split() == (LONG_REPLY * 4).split()


async def test_a_reply_of_exactly_4096_characters_is_one_message_and_4097_are_cut_at_4096(bot: Harness) -> None:
    tg, tgi = bot.tg, bot.tgi
    await bot.add_character("Hamlet")
    chat = await pick(bot)
    exact = sentences(4096)
    tgi.script(reply=exact, chunks=30)
    tg.say(chat, person_of(chat), "All of it, in one.")
    await bot.idle()
    over, head = just_over(4096)  # the sentence end's space is character 4,096: the cut is right there
    tgi.script(reply=over, chunks=30)
    tg.say(chat, person_of(chat), "All of it, and one more.")
    await bot.idle()
    finals = [c.params["text"] for c in tg.calls_of("sendMessage", chat["id"])][1:]  # after the /use answer
    assert finals == [exact, head, "I"]


async def test_the_model_server_down_gives_a_short_notice(store, cache, tg, tgi) -> None:
    async with running_bot(store, cache, tg, tgi, model_url="http://127.0.0.1:9") as bot:
        await bot.add_character("Hamlet")
        chat = await pick(bot)
        tg.say(chat, person_of(chat), "Are you there?")
        await bot.idle()
        assert tg.texts(chat["id"])[-1] == NOTICE_UNAVAILABLE
        assert len(NOTICE_UNAVAILABLE) < 200
        assert "regen" not in json.dumps(tg.bot_messages(chat["id"])[-1])


@pytest.mark.parametrize("backends", ["sqlite-redis", "sqlite-memory"], indirect=True)
async def test_a_flood_from_one_person_is_limited_while_others_are_answered(store, cache, tg, tgi) -> None:
    async with running_bot(store, cache, tg, tgi, rate_limit_messages=5) as bot:
        await bot.add_character("Hamlet")
        flooder = await pick(bot, 21, "Flo")
        calm = await pick(bot, 22, "Cal")
        for i in range(50):
            tg.say(flooder, person_of(flooder), f"message {i}")
            if i == 25:
                tg.say(calm, person_of(calm), "Hello, Hamlet.")
        await bot.idle()
        answers = tg.texts(flooder["id"])[1:]  # after the /use answer
        assert answers == [tgi.reply] * 5 + [NOTICE_RATE]
        assert tg.texts(calm["id"])[1:] == [tgi.reply]


@pytest.mark.parametrize("how", ["caption", "reply"])
async def test_an_owner_imports_a_json_card_from_a_document(bot: Harness, how: str) -> None:
    tg = bot.tg
    owner = tg.user(OWNER_ID, "Olga")
    chat = tg.private(owner)
    card = {"spec": "chara_card_v2", "spec_version": "2.0",
            "data": {"name": "Yorick", "description": "A fellow of infinite jest.", "scenario": "A graveyard.", "extensions": {}}}
    content = json.dumps(card).encode()
    if how == "caption":
        tg.send_document(chat, owner, content, caption="/character import")
    else:
        document = tg.send_document(chat, owner, content)
        tg.say(chat, owner, "/character import", reply_to=document["message"]["message_id"])
    await bot.idle()
    assert tg.texts(chat["id"])[-1].startswith("Imported Yorick.")
    assert tg.calls_of("getFile") and tg.calls_of("downloadFile")
    assert (await bot.app.store.characters.get_by_name("Yorick")) is not None


async def test_in_a_private_chat_only_an_owner_may_import(bot: Harness) -> None:
    tg = bot.tg
    eve = tg.user(13, "Eve")
    chat = tg.private(eve)
    tg.send_document(chat, eve, b'{"name": "Yorick"}', caption="/character import")
    await bot.idle()
    assert tg.texts(chat["id"])[-1] == "In a private chat only a bot owner can do that."
    assert (await bot.app.store.characters.get_by_name("Yorick")) is None


async def test_a_card_file_over_the_limit_is_not_downloaded(store, cache, tg, tgi) -> None:
    async with running_bot(store, cache, tg, tgi, max_card_bytes=2 * 1024 * 1024) as bot:
        owner = tg.user(OWNER_ID, "Olga")
        chat = tg.private(owner)
        tg.send_document(chat, owner, b" " * (3 * 1024 * 1024), caption="/character import")
        await bot.idle()
        assert tg.texts(chat["id"])[-1] == "That file is 3,145,728 bytes; a card may be at most 2,097,152."
        assert not tg.calls_of("getFile") and not tg.calls_of("downloadFile")
