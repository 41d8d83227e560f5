"""Characters: add, find by name in any case, list, replace, delete with everything that hangs off them."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa

from core.errors import Conflict, InvalidInput, NotFound
from core.events import Trigger
from core.state import Binding
from storage.tables import bindings, characters, messages, relationship_states, state_changes
from tests.storage.helpers import card, change, conversation, state


async def count(store, table: sa.Table) -> int:
    async with store.engine.connect() as conn:
        return (await conn.execute(sa.select(sa.func.count()).select_from(table))).scalar_one()


async def test_a_character_is_found_by_id_and_by_name_in_any_case(store) -> None:
    added = await store.characters.add(card("Hamlet"))
    assert added.id > 0 and added.name == "Hamlet" and added.public

    by_id = await store.characters.get(added.id)
    assert by_id is not None and by_id.name == "Hamlet" and by_id.profile.mbti == "INFP"
    for spelling in ("hamlet", "HAMLET", "  hAmLeT "):
        found = await store.characters.get_by_name(spelling)
        assert found is not None and found.id == added.id
    assert await store.characters.get_by_name("Ophelia") is None
    assert await store.characters.get(added.id + 1000) is None


async def test_names_compare_without_case_beyond_ascii(store) -> None:
    await store.characters.add(card("Ärger Straße"))
    assert (await store.characters.get_by_name("ÄRGER STRASSE")) is not None
    with pytest.raises(Conflict):
        await store.characters.add(card("ärger strasse"))


async def test_list_is_ordered_by_name(store) -> None:
    for name in ("ophelia", "Hamlet", "Claudius"):
        await store.characters.add(card(name))
    assert [c.name for c in await store.characters.list()] == ["Claudius", "Hamlet", "ophelia"]


async def test_a_duplicate_name_in_another_case_is_a_conflict_and_writes_nothing(store) -> None:
    await store.characters.add(card("Hamlet"))
    with pytest.raises(Conflict, match="(?i)hamlet"):
        await store.characters.add(card("HAMLET", scene="another"))
    assert await count(store, characters) == 1
    assert (await store.characters.get_by_name("hamlet")).profile.scene == ""


async def test_the_card_is_stored_exactly_with_unknown_keys_unicode_and_key_order(store) -> None:
    original = card("哈姆雷特", language="zh", description="丹麦王子 🗡️ «quoted» \\ \"escaped\"")
    original["zeta_unknown_top"] = {"nested": [1, 2.5, None, True, {"ü": "ß"}]}
    original["data"]["extensions"]["other_tool"] = {"b": 1, "a": 2}
    original["data"]["alternate_greetings"] = ["你好", "😀"]
    original["alpha_after"] = "kept after zeta"
    added = await store.characters.add(original)

    stored = await store.characters.get(added.id)
    assert stored.card == original
    # Same keys in the same order: export gives back what was imported.
    assert json.dumps(stored.card, ensure_ascii=False) == json.dumps(original, ensure_ascii=False)
    assert stored.profile.language == "zh"


async def test_a_private_card_makes_a_non_public_character(store) -> None:
    added = await store.characters.add(card("Hidden", public=False))
    assert not added.public
    assert not (await store.characters.get(added.id)).public


async def test_replace_stores_the_edited_card_and_can_rename(store) -> None:
    added = await store.characters.add(card("Hamlet"))
    edited = card("Prince Hamlet", scene="Elsinore, at night.")
    replaced = await store.characters.replace(added.id, edited)
    assert replaced.id == added.id and replaced.name == "Prince Hamlet"
    again = await store.characters.get(added.id)
    assert again.card == edited and again.profile.scene == "Elsinore, at night."
    assert await store.characters.get_by_name("hamlet") is None
    assert (await store.characters.get_by_name("prince hamlet")).id == added.id


async def test_replace_in_place_keeps_the_name_and_ignores_case_changes(store) -> None:
    added = await store.characters.add(card("Hamlet"))
    replaced = await store.characters.replace(added.id, card("HAMLET"))
    assert (replaced.id, replaced.name) == (added.id, "HAMLET")
    stored = await store.characters.get(added.id)
    assert stored.name == "HAMLET" and stored.card["data"]["name"] == "HAMLET"  # the new spelling is stored
    for spelling in ("hamlet", "HAMLET"):
        assert (await store.characters.get_by_name(spelling)).id == added.id  # and found under its name
    assert [c.id for c in await store.characters.list()] == [added.id]  # one character, not a second one


async def test_replace_onto_another_name_is_a_conflict_and_changes_nothing(store) -> None:
    hamlet = await store.characters.add(card("Hamlet"))
    await store.characters.add(card("Ophelia"))
    with pytest.raises(Conflict, match="(?i)ophelia"):
        await store.characters.replace(hamlet.id, card("ophelia"))
    assert (await store.characters.get(hamlet.id)).name == "Hamlet"


async def test_replace_of_a_missing_character_is_not_found(store) -> None:
    with pytest.raises(NotFound):
        await store.characters.replace(12345, card("Nobody"))


async def test_an_invalid_card_is_refused_before_anything_is_written(store) -> None:
    bad = card("Hamlet")
    bad["data"]["extensions"]["personae"]["language"] = "fr"
    with pytest.raises(InvalidInput):
        await store.characters.add(bad)
    assert await count(store, characters) == 0


async def test_delete_removes_the_character_with_its_bindings_states_audit_and_messages(store) -> None:
    hamlet = await store.characters.add(card("Hamlet"))
    ophelia = await store.characters.add(card("Ophelia"))
    for who in (hamlet, ophelia):
        await store.bindings.put(Binding("discord", "g", f"chan-{who.id}", who.id, Trigger.ALL))
        created = await store.relationships.get_or_create(state(who.id))
        assert await store.relationships.update(change(created, happiness=5))
        await store.messages.add_exchange(conversation(who.id), ("hi", 1, f"m{who.id}"), ("hello", 2))

    assert await store.characters.delete(hamlet.id) is True
    assert await store.characters.delete(hamlet.id) is False
    assert await store.characters.get(hamlet.id) is None
    for table in (bindings, relationship_states, state_changes):
        assert await count(store, table) == 1, table.name
    assert await count(store, messages) == 2
    # Ophelia's rows are the ones left.
    assert (await store.bindings.get("discord", f"chan-{ophelia.id}")) is not None
    assert len(await store.messages.recent(conversation(ophelia.id), 10)) == 2
    assert await store.messages.recent(conversation(hamlet.id), 10) == []


AVATAR = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 40  # binary, with every byte value and NULs


async def test_an_avatar_is_stored_with_the_character_and_read_back_byte_for_byte(store) -> None:
    hamlet = await store.characters.add(card("Hamlet"), AVATAR, "png")
    ophelia = await store.characters.add(card("Ophelia"))

    assert await store.characters.avatar(hamlet.id) == (AVATAR, "png")
    assert await store.characters.avatar(ophelia.id) is None
    assert await store.characters.avatar(hamlet.id + 1000) is None


async def test_replace_keeps_the_avatar_unless_a_new_one_is_given(store) -> None:
    hamlet = await store.characters.add(card("Hamlet"), AVATAR, "png")

    await store.characters.replace(hamlet.id, card("Hamlet", scene="Elsinore."))
    assert await store.characters.avatar(hamlet.id) == (AVATAR, "png")

    await store.characters.replace(hamlet.id, card("Hamlet"), b"\xff\xd8\xff new", "jpg")
    assert await store.characters.avatar(hamlet.id) == (b"\xff\xd8\xff new", "jpg")


@pytest.mark.parametrize("avatar, ext", [(b"", "png"), (b"x", "toolongext"), (b"x", "p/g"), (b"x", None), (None, "png")])
async def test_a_bad_avatar_is_refused_and_nothing_is_written(store, avatar, ext) -> None:
    with pytest.raises(InvalidInput):
        await store.characters.add(card("Hamlet"), avatar, ext)
    assert await count(store, characters) == 0


async def test_the_chat_path_reads_never_select_the_avatar(store) -> None:
    hamlet = await store.characters.add(card("Hamlet"), AVATAR, "png")
    statements: list[str] = []

    def record(conn, cursor, statement, *args) -> None:
        statements.append(statement)

    target = store.engine.sync_engine
    sa.event.listen(target, "before_cursor_execute", record)
    try:
        assert (await store.characters.get(hamlet.id)).name == "Hamlet"
        assert (await store.characters.get_by_name("hamlet")).name == "Hamlet"
        assert [c.name for c in await store.characters.list()] == ["Hamlet"]
        await store.characters.avatar(hamlet.id)
    finally:
        sa.event.remove(target, "before_cursor_execute", record)
    selects = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
    assert len(selects) == 4
    assert not any("avatar" in s for s in selects[:3]), selects[:3]
    assert "avatar" in selects[3]
