"""core.addressing: who answers a message in a channel where one or several characters play."""

from __future__ import annotations

from core.addressing import Castmate, named, next_speaker, pick
from core.events import Trigger

HAMLET, OPHELIA, ANNE, LADY_ANNE = Castmate(1, "Hamlet"), Castmate(2, "Ophelia"), Castmate(3, "Anne"), Castmate(4, "Lady Anne")
CAST = [HAMLET, OPHELIA]


def test_a_name_that_opens_or_closes_the_message_or_is_at_written_addresses_that_character() -> None:
    assert named("Hamlet, what did you tell Elena?", CAST) == 1
    assert named("hey ophelia! how are you", CAST) == 2
    assert named("What do you think, Ophelia?", CAST) == 2
    assert named("I asked @Hamlet already", CAST) == 1
    assert named("(bows) Ophelia. Sweet lady.", CAST) == 2


def test_a_name_mentioned_in_passing_addresses_no_one() -> None:
    assert named("I think Hamlet is brooding again", CAST) is None
    assert named("Hamletesque gloom everywhere", CAST) is None
    assert named("", CAST) is None


def test_the_longest_name_wins_and_the_earliest_address_wins() -> None:
    assert named("Lady Anne, come here", [ANNE, LADY_ANNE]) == 4
    assert named("Hamlet, go and tell @Ophelia", CAST) == 1


def test_a_reply_to_a_characters_message_goes_to_it_before_any_name() -> None:
    assert pick(CAST, text="Ophelia, look", trigger=Trigger.MENTION, replied_to=1) == 1


def test_mention_mode_answers_names_replies_and_mentions_only() -> None:
    assert pick(CAST, text="nice weather", trigger=Trigger.MENTION) is None
    assert pick(CAST, text="Ophelia, hi", trigger=Trigger.MENTION) == 2
    assert pick([HAMLET], text="hello", trigger=Trigger.MENTION, mentioned=True) == 1
    # Several characters and a bare mention: the one the person talked to last, else the first bound.
    assert pick(CAST, text="hello", trigger=Trigger.MENTION, mentioned=True, last_partner=2) == 2
    assert pick(CAST, text="hello", trigger=Trigger.MENTION, mentioned=True) == 1


def test_trigger_all_goes_to_the_most_recently_addressed_character_of_that_person() -> None:
    assert pick(CAST, text="and then?", trigger=Trigger.ALL, last_partner=2) == 2
    assert pick(CAST, text="and then?", trigger=Trigger.ALL, last_partner=None) == 1
    assert pick(CAST, text="and then?", trigger=Trigger.ALL, last_partner=99) == 1  # left the scene since
    assert pick(CAST, text="Hamlet, and you?", trigger=Trigger.ALL, last_partner=2) == 1


def test_no_cast_no_answer_and_a_private_chat_is_its_one_character() -> None:
    assert pick([], text="Hamlet, hi", trigger=Trigger.ALL) is None
    assert pick([OPHELIA], text="anything", trigger=Trigger.MENTION, private=True) == 2


def test_the_conversation_trigger_is_bounded_and_never_answers_itself() -> None:
    reply = "Ophelia, what say you?"
    assert next_speaker(CAST, speaker=1, reply_text=reply, trigger=Trigger.CONVERSATION, turns_in_a_row=0, limit=2) == 2
    assert next_speaker(CAST, speaker=1, reply_text=reply, trigger=Trigger.CONVERSATION, turns_in_a_row=2, limit=2) is None
    assert next_speaker(CAST, speaker=1, reply_text=reply, trigger=Trigger.ALL, turns_in_a_row=0, limit=2) is None
    assert next_speaker(CAST, speaker=2, reply_text=reply, trigger=Trigger.CONVERSATION, turns_in_a_row=0, limit=2) is None
    assert next_speaker(CAST, speaker=1, reply_text="(sighs)", trigger=Trigger.CONVERSATION, turns_in_a_row=0, limit=2) is None


def test_a_character_named_with_a_common_word_is_addressed_only_with_an_at_sign() -> None:
    cast = [Castmate(1, "Hamlet"), Castmate(2, "The")]
    assert pick(cast, text="The sword!", trigger=Trigger.ALL, last_partner=1) == 1
    assert pick(cast, text="The weather is fine today, Hamlet.", trigger=Trigger.ALL, last_partner=2) == 1
    assert pick(cast, text="@The, are you there?", trigger=Trigger.ALL, last_partner=1) == 2


def test_a_character_named_with_a_term_of_address_is_addressed_only_with_an_at_sign() -> None:
    """ "Yes, sir." closes with a name-like word: it is not for a character called Sir (nor does a
    reply saying it make Sir answer)."""
    cast = [Castmate(1, "Hamlet"), Castmate(2, "Sir"), Castmate(3, "Captain")]
    assert pick(cast, text="Thanks, sir.", trigger=Trigger.MENTION) is None
    assert pick(cast, text="Captain, the ship!", trigger=Trigger.ALL, last_partner=1) == 1
    assert pick(cast, text="@Sir, a word.", trigger=Trigger.MENTION) == 2
    assert next_speaker(cast, speaker=1, reply_text="Yes, sir.", trigger=Trigger.CONVERSATION, turns_in_a_row=0, limit=2) is None
