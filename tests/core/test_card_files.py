"""Card files: PNG, CharX and JSON read and written without losing a field; bad files get one clear line."""

from __future__ import annotations

import base64
import copy
import io
import json
import random
import struct
import sys
import zipfile
import zlib

import pytest

from core.card_files import (
    MAX_CHARX_ENTRIES,
    V3_ONLY_FIELDS,
    CardFile,
    placeholder_png,
    read_card_file,
    to_v2,
    to_v3,
    write_charx,
    write_png_card,
)
from core.cards import normalise_card
from core.errors import InvalidInput

try:
    from PIL import Image, PngImagePlugin
except ImportError:  # the plain-colour placeholder is used instead
    Image = PngImagePlugin = None

needs_pillow = pytest.mark.skipif(Image is None, reason="Pillow is not installed")

SIGNATURE = b"\x89PNG\r\n\x1a\n"
EXT = {
    "world": "Ye Olde {World} of {{char}}",
    "traits": ["calm", "勇敢"],
    "mbti": "INTJ",
    "style": ["dry"],
    "language": "en",
    "emotion": {"happiness": 5, "sadness": 2},
    "relationship": 4,
}


def v2_card() -> dict:
    return {
        "spec": "chara_card_v2",
        "spec_version": "2.0",
        "data": {
            "name": "Ann Lee",
            "description": "A {strange} brace and {{char}} meets {{user}}; unicode: 林黛玉 ☕ 🐉 é\u200d",
            "personality": "calm",
            "scenario": "A café at night.\nRain.",
            "first_mes": "*waves* Hi {{user}}! {",
            "mes_example": "<START>\n{{user}}: hi\n{{char}}: }{ hello",
            "creator_notes": "",
            "system_prompt": "",
            "post_history_instructions": "",
            "alternate_greetings": ["Yo.", "嗨"],
            "tags": ["test"],
            "creator": "me",
            "character_version": "7",
            "custom_unknown_field": {"keep": [1, "two", None, 3.5, True]},
            "character_book": {"entries": [{"keys": ["tea"], "content": "Tea is sacred.", "enabled": True, "insertion_order": 1}]},
            "extensions": {
                "personae": copy.deepcopy(EXT),
                "depth_prompt": {"prompt": "stay {in} character", "depth": 4, "role": "system"},
                "chub": {"id": 12345, "full_path": "someone/ann"},
                "fav": False,
            },
        },
        "top_level_unknown": "kept",
    }


def v3_card() -> dict:
    card = v2_card()
    card["spec"], card["spec_version"] = "chara_card_v3", "3.0"
    card["data"].update(
        nickname="Annie",
        creator_notes_multilingual={"en": "notes", "zh": "笔记"},
        source=["https://example.org/ann"],
        group_only_greetings=["Hello, everyone."],
        creation_date=1700000000,
        modification_date=1700000001,
        assets=[{"type": "icon", "uri": "ccdefault:", "name": "main", "ext": "png"}],
    )
    card["data"]["character_book"]["entries"][0]["use_regex"] = False
    return card


# --- PNG helpers, written independently of the code under test ------------------------------------


def chunk(ctype: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + ctype + data + struct.pack(">I", zlib.crc32(ctype + data))


def chunks_of(png: bytes) -> list[tuple[bytes, bytes]]:
    assert png.startswith(SIGNATURE)
    out, pos = [], 8
    while pos < len(png):
        (length,) = struct.unpack(">I", png[pos : pos + 4])
        ctype, data = png[pos + 4 : pos + 8], png[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", png[pos + 8 + length : pos + 12 + length])
        assert crc == zlib.crc32(ctype + data), ctype
        out.append((ctype, data))
        pos += 12 + length
    return out


def text_chunks(png: bytes) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for ctype, data in chunks_of(png):
        if ctype == b"tEXt":
            key, _, text = data.partition(b"\x00")
            found.setdefault(key.decode("latin-1"), []).append(text.decode("latin-1"))
    return found


def decoded(text: str) -> dict:
    return json.loads(base64.b64decode(text).decode("utf-8"))


def b64(obj: object) -> bytes:
    raw = obj if isinstance(obj, bytes) else json.dumps(obj, ensure_ascii=False).encode("utf-8")
    return base64.b64encode(raw)


def tiny_png(extra: list[bytes] = ()) -> bytes:
    """A 2x2 RGB image built by hand, with ``extra`` chunks between IHDR and IDAT."""
    ihdr = chunk(b"IHDR", struct.pack(">IIBBBBB", 2, 2, 8, 2, 0, 0, 0))
    pixels = b"\x00\xff\x00\x00\x00\xff\x00" + b"\x00\x00\x00\xff\xff\xff\xff"
    return SIGNATURE + ihdr + b"".join(extra) + chunk(b"IDAT", zlib.compress(pixels)) + chunk(b"IEND", b"")


def card_png(*chunks_: bytes) -> bytes:
    return tiny_png(list(chunks_))


def real_png() -> bytes:
    """A picture saved by Pillow (with a Comment text chunk), or the hand-made one without Pillow."""
    if Image is None:
        return tiny_png([chunk(b"tEXt", b"Comment\x00hello")])
    image = Image.new("RGB", (40, 60))
    for x in range(40):
        for y in range(60):
            image.putpixel((x, y), (x * 6, y * 4, (x * y) % 256))
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "hello")
    out = io.BytesIO()
    image.save(out, format="PNG", pnginfo=info)
    return out.getvalue()


def image_chunks(png: bytes) -> list[tuple[bytes, bytes]]:
    return [(t, d) for t, d in chunks_of(png) if t in (b"IHDR", b"IDAT", b"PLTE", b"IEND")]


# --- round trips ------------------------------------------------------------------------------------


def test_v3_json_to_png_to_json_keeps_every_field() -> None:
    card = v3_card()
    got = read_card_file(write_png_card(card, real_png()))
    assert got.source_format == "png" and got.avatar_ext == "png"
    assert got.card == card  # unknown fields, foreign extensions, unicode, braces: all there


def test_v2_json_to_png_to_json_keeps_every_field() -> None:
    card = v2_card()
    png = write_png_card(card, real_png())
    assert decoded(text_chunks(png)["chara"][0]) == card  # the V2 chunk is the card itself
    got = read_card_file(png).card  # read from ccv3, so it comes back as V3
    assert got["spec"] == "chara_card_v3" and got["spec_version"] == "3.0"
    assert got["data"]["group_only_greetings"] == []
    assert to_v2(got) == card
    assert {k: v for k, v in got["data"].items() if k != "group_only_greetings"} == card["data"]


def test_json_file_is_read_as_is() -> None:
    card = v3_card()
    got = read_card_file(json.dumps(card, ensure_ascii=False).encode("utf-8"), "ann.json")
    assert got == CardFile(card=card, avatar=None, avatar_ext=None, source_format="json")


@pytest.mark.parametrize("make", [v2_card, v3_card])
def test_png_to_json_to_png_keeps_cards_and_image_data(make) -> None:
    original = write_png_card(make(), real_png())
    got = read_card_file(original)
    assert got.avatar == original
    again = write_png_card(json.loads(json.dumps(got.card)), got.avatar)
    assert image_chunks(again) == image_chunks(original)
    texts, texts_again = text_chunks(original), text_chunks(again)
    assert len(texts_again["chara"]) == len(texts_again["ccv3"]) == 1
    assert decoded(texts_again["chara"][0]) == decoded(texts["chara"][0])
    assert decoded(texts_again["ccv3"][0]) == decoded(texts["ccv3"][0])
    assert texts_again["Comment"] == ["hello"]  # other chunks are kept
    assert again == original  # and nothing else moved


def test_chunks_go_before_iend_and_old_card_chunks_are_replaced() -> None:
    old = b64({"name": "Stale", "description": "old"})
    avatar = tiny_png(
        [
            chunk(b"tEXt", b"chara\x00" + old),
            chunk(b"zTXt", b"ccv3\x00\x00" + zlib.compress(old)),
            chunk(b"iTXt", b"CCV3\x00\x00\x00\x00\x00" + old),
            chunk(b"tEXt", b"Software\x00paint"),
        ]
    )
    png = write_png_card(v3_card(), avatar)
    types = [t for t, _ in chunks_of(png)]
    assert types == [b"IHDR", b"tEXt", b"IDAT", b"tEXt", b"tEXt", b"IEND"]
    texts = text_chunks(png)
    assert texts["Software"] == ["paint"]
    assert decoded(texts["ccv3"][0]) == v3_card()
    assert read_card_file(png).card["data"]["name"] == "Ann Lee"


def test_v2_chunk_of_a_v3_card_drops_only_the_v3_fields() -> None:
    v2 = decoded(text_chunks(write_png_card(v3_card(), None))["chara"][0])
    assert v2["spec"] == "chara_card_v2" and v2["spec_version"] == "2.0"
    assert not set(V3_ONLY_FIELDS) & set(v2["data"])
    expected = v3_card()
    for key in V3_ONLY_FIELDS:
        expected["data"].pop(key)
    assert v2["data"] == expected["data"]  # extensions, unknown fields and the lorebook stay
    assert v2["top_level_unknown"] == "kept"


def test_to_v3_and_to_v2() -> None:
    v3 = to_v3(v2_card())
    assert v3["spec"] == "chara_card_v3" and v3["data"]["group_only_greetings"] == []
    assert to_v2(v3) == v2_card()
    assert to_v3(v3_card()) == v3_card()
    assert to_v2(v2_card()) == v2_card()
    newer = v3_card() | {"spec_version": "3.1"}
    assert to_v3(newer)["spec_version"] == "3.1"
    v1 = to_v3({"name": "Old", "description": "d", "first_mes": "hi"})
    assert v1["data"]["name"] == "Old" and v1["spec"] == "chara_card_v3"
    card = v3_card()
    to_v2(card), to_v3(card)
    assert card == v3_card()  # the argument is never changed


def test_ccv3_wins_over_chara_wherever_it_is() -> None:
    old, new = v2_card(), v3_card()
    old["data"]["name"], new["data"]["name"] = "From Chara", "From Ccv3"
    for order in ((b"chara", old), (b"ccv3", new)), ((b"ccv3", new), (b"chara", old)):
        png = card_png(*(chunk(b"tEXt", key + b"\x00" + b64(c)) for key, c in order))
        assert read_card_file(png).card["data"]["name"] == "From Ccv3"


def test_png_with_only_chara_works_even_v1() -> None:
    assert read_card_file(card_png(chunk(b"tEXt", b"chara\x00" + b64(v2_card())))).card == v2_card()
    v1 = {"name": "Tavern", "description": "d", "personality": "p", "first_mes": "hi", "chat": "x"}
    got = read_card_file(card_png(chunk(b"tEXt", b"chara\x00" + b64(v1)))).card
    assert got["spec"] == "chara_card_v2" and got["data"]["name"] == "Tavern" and got["chat"] == "x"


def test_compressed_and_international_text_chunks_are_read() -> None:
    card = v3_card()
    ztxt = chunk(b"zTXt", b"ccv3\x00\x00" + zlib.compress(b64(card)))
    assert read_card_file(card_png(ztxt)).card == card
    itxt = chunk(b"iTXt", b"ccv3\x00\x00\x00en\x00\x00" + b64(card))
    assert read_card_file(card_png(itxt)).card == card
    itxt_z = chunk(b"iTXt", b"ccv3\x00\x01\x00\x00\x00" + zlib.compress(b64(card)))
    assert read_card_file(card_png(itxt_z)).card == card


def test_base64_with_line_breaks_and_missing_padding_is_read() -> None:
    text = b64(v2_card()).rstrip(b"=")
    wrapped = b"\n".join(text[i : i + 76] for i in range(0, len(text), 76))
    assert read_card_file(card_png(chunk(b"tEXt", b"chara\x00" + wrapped))).card == v2_card()


@needs_pillow
def test_pillow_opens_the_written_png_and_reads_both_cards() -> None:
    png = write_png_card(v3_card(), real_png())
    image = Image.open(io.BytesIO(png))
    image.load()
    assert image.size == (40, 60)
    assert decoded(image.text["chara"])["spec"] == "chara_card_v2"
    assert decoded(image.text["ccv3"]) == v3_card()
    assert image.tobytes() == Image.open(io.BytesIO(real_png())).tobytes()


def test_no_avatar_gives_a_placeholder_portrait() -> None:
    png = write_png_card(v2_card(), None)
    got = read_card_file(png)
    assert got.avatar == png and got.avatar_ext == "png"
    ihdr = dict(chunks_of(png))[b"IHDR"]
    assert struct.unpack(">II", ihdr[:8]) == (400, 600)
    assert placeholder_png("Ann Lee") == placeholder_png("Ann Lee")
    assert placeholder_png("Ann Lee") != placeholder_png("Bob")
    assert chunks_of(placeholder_png("林黛玉"))  # no Latin initials: still a sound PNG
    if Image is not None:
        image = Image.open(io.BytesIO(png))
        assert image.size == (400, 600)
        colours = {colour for _, colour in image.convert("RGB").getcolors(400 * 600)}
        assert (255, 255, 255) in colours and image.getpixel((0, 0)) != (255, 255, 255)  # initials drawn
        assert decoded(image.text["chara"]) == v2_card()


def test_placeholder_without_pillow_is_a_plain_colour_png(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "PIL", None)  # makes "from PIL import ..." fail
    png = placeholder_png("Ann Lee")
    types = [t for t, _ in chunks_of(png)]
    assert types == [b"IHDR", b"IDAT", b"IEND"]
    ihdr = dict(chunks_of(png))[b"IHDR"]
    assert struct.unpack(">IIBBBBB", ihdr) == (400, 600, 8, 2, 0, 0, 0)
    rows = zlib.decompress(dict(chunks_of(png))[b"IDAT"])
    assert rows == (b"\x00" + rows[1:4] * 400) * 600  # one colour, no initials
    assert read_card_file(write_png_card(v2_card(), None)).card["data"]["name"] == "Ann Lee"
    if Image is not None:
        monkeypatch.undo()
        assert Image.open(io.BytesIO(png)).size == (400, 600)


def test_charx_with_icon_imports_with_avatar() -> None:
    avatar = real_png()
    card = v3_card()
    card["data"]["assets"] = [
        {"type": "background", "uri": "embeded://assets/background/images/bg.png", "name": "main", "ext": "png"},
        {"type": "icon", "uri": "embeded://assets/icon/images/other.png", "name": "alt", "ext": "png"},
        {"type": "icon", "uri": "embeded://assets/icon/images/main.png", "name": "main", "ext": "png"},
    ]
    got = read_card_file(
        make_zip(
            {
                "card.json": json.dumps(card).encode(),
                "assets/icon/images/main.png": avatar,
                "assets/icon/images/other.png": b"not me",
                "assets/background/images/bg.png": b"nor me",
                "x_meta/app.json": b"{}",
            }
        ),
        "ann.charx",
    )
    assert got == CardFile(card=card, avatar=avatar, avatar_ext="png", source_format="charx")


def test_charx_icon_variants() -> None:
    card = v3_card()
    card["data"]["assets"] = [{"type": "icon", "uri": "embedded://assets/icon/images/p.webp", "name": "main", "ext": "webp"}]
    webp = b"RIFF\x10\x00\x00\x00WEBPVP8 " + bytes(8)
    got = read_card_file(make_zip({"card.json": json.dumps(card).encode(), "assets/icon/images/p.webp": webp}))
    assert got.avatar == webp and got.avatar_ext == "webp"
    card["data"]["assets"] = [{"type": "icon", "uri": "ccdefault:", "name": "main", "ext": "png"}]
    got = read_card_file(make_zip({"card.json": json.dumps(card).encode()}))
    assert got.avatar is None and got.avatar_ext is None and got.card == card
    del card["data"]["assets"]
    assert read_card_file(make_zip({"card.json": json.dumps(card).encode()})).avatar is None


def test_write_charx_round_trip() -> None:
    avatar = real_png()
    blob = write_charx(v2_card(), avatar)
    assert blob == write_charx(v2_card(), avatar)  # deterministic
    got = read_card_file(blob)
    assert got.source_format == "charx" and got.avatar == avatar and got.avatar_ext == "png"
    expected = to_v3(v2_card())
    expected["data"]["assets"] = [{"type": "icon", "uri": "embeded://assets/icon/images/main.png", "name": "main", "ext": "png"}]
    assert got.card == expected
    card = v3_card()
    card["data"]["assets"].append({"type": "emotion", "uri": "https://example.org/happy.png", "name": "happy", "ext": "png"})
    got = read_card_file(write_charx(card, None))
    assert got.card["data"]["assets"][1:] == card["data"]["assets"][1:]
    assert got.card["data"]["assets"][0]["uri"].startswith("embeded://")
    assert chunks_of(got.avatar)


# --- bad input --------------------------------------------------------------------------------------


def make_zip(files: dict[str, bytes], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", method) as archive:
        for name, data in files.items():
            archive.writestr(zipfile.ZipInfo(name), data, compress_type=method)
    return out.getvalue()


def flipped(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1 :]


def good_png() -> bytes:
    return write_png_card(v2_card(), tiny_png())


def card_zip() -> dict[str, bytes]:
    return {"card.json": json.dumps(v3_card()).encode()}


BAD_FILES = [
    ("no card chunk", lambda: tiny_png([chunk(b"tEXt", b"Comment\x00hi")]),
     "the PNG has no character card in it (no 'chara' or 'ccv3' text chunk)"),
    ("flipped byte in IDAT", lambda: flipped(good_png(), good_png().index(b"IDAT") + 6),
     "the PNG is corrupt: the 'IDAT' chunk at byte"),
    ("flipped byte in a card chunk", lambda: flipped(good_png(), good_png().index(b"ccv3") + 40),
     "the 'tEXt' chunk at byte"),
    ("truncated", lambda: good_png()[: len(good_png()) // 2], "the PNG is truncated"),
    ("no IEND", lambda: good_png()[:-12], "the PNG is truncated: it ends at byte"),
    ("signature only", lambda: SIGNATURE, "the PNG is truncated"),
    ("bad chunk type", lambda: SIGNATURE + chunk(b"IH\x00R", b""), "invalid type"),
    ("not IHDR first", lambda: SIGNATURE + chunk(b"IDAT", b"") + chunk(b"IEND", b""), "does not start with an IHDR"),
    ("base64 garbage", lambda: card_png(chunk(b"tEXt", b"ccv3\x00@@not base64!!")),
     "the PNG's 'ccv3' chunk is not valid base64"),
    ("base64 of invalid UTF-8", lambda: card_png(chunk(b"tEXt", b"chara\x00" + base64.b64encode(b'{"name": "\xff\xfe"}'))),
     "the PNG's 'chara' chunk is not UTF-8 text once base64-decoded (bad byte at 10)"),
    ("base64 of JSON that is not a card", lambda: card_png(chunk(b"tEXt", b"ccv3\x00" + b64({"hello": 1}))),
     "the PNG's 'ccv3' chunk holds no valid card: the card has no name"),
    ("base64 of a JSON list", lambda: card_png(chunk(b"tEXt", b"chara\x00" + b64([1, 2]))),
     "holds no valid card: the card must be a JSON object"),
    ("base64 of non-JSON", lambda: card_png(chunk(b"tEXt", b"chara\x00" + b64(b"hello"))),
     "holds no valid card: the card is not JSON"),
    ("base64 of a card with a bad MBTI", lambda: card_png(chunk(b"tEXt", b"ccv3\x00" + b64(
        v2_card() | {"data": v2_card()["data"] | {"extensions": {"personae": EXT | {"mbti": "XYZW"}}}}))),
     "MBTI 'XYZW' is not a type"),
    ("broken ccv3 is not skipped for chara", lambda: card_png(
        chunk(b"tEXt", b"chara\x00" + b64(v2_card())), chunk(b"tEXt", b"ccv3\x00%%%")),
     "the PNG's 'ccv3' chunk is not valid base64"),
    ("zTXt bomb", lambda: card_png(chunk(b"zTXt", b"ccv3\x00\x00" + zlib.compress(b"A" * 20_000_000))), "expands past"),
    ("corrupt zTXt", lambda: card_png(chunk(b"zTXt", b"chara\x00\x00not zlib")), "corrupt compressed data"),
    ("deeply nested JSON", lambda: b'{"a":' * 100_000 + b"1" + b"}" * 100_000, "nested too deeply"),
    ("deeply nested card in a PNG", lambda: card_png(chunk(b"tEXt", b"chara\x00" + base64.b64encode(b"[" * 100_000))),
     "nested too deeply"),
    ("a card nested 500 deep", lambda: b'{"name": "A", "x": ' + b"[" * 500 + b"]" * 500 + b"}", "nested too deeply"),
    ("JSON that is not a card", lambda: b'{"spec": "chara_card_v9", "data": {"name": "A"}}', "unknown card spec 'chara_card_v9'"),
    ("empty file", lambda: b"", "the file is empty"),
    ("a JPEG", lambda: b"\xff\xd8\xff\xe0" + bytes(100), "the file is a JPG image"),
    ("zip without card.json", lambda: make_zip({"assets/icon/images/main.png": tiny_png()}),
     "the CharX file has no card.json at its root"),
    ("card.json not at the root", lambda: make_zip({"sub/card.json": card_zip()["card.json"]}), "has no card.json"),
    ("CharX with ../evil", lambda: make_zip(card_zip() | {"../evil": b"x"}),
     "the CharX file holds an unsafe path '../evil'; refused"),
    ("CharX with a nested ..", lambda: make_zip(card_zip() | {"assets/../../evil": b"x"}), "unsafe path"),
    ("CharX with an absolute path", lambda: make_zip(card_zip() | {"/etc/evil": b"x"}), "unsafe path '/etc/evil'"),
    ("CharX with a drive", lambda: make_zip(card_zip() | {"C:/evil": b"x"}), "unsafe path 'C:/evil'"),
    ("CharX with a backslash ..", lambda: make_zip(card_zip() | {"assets\\..\\..\\evil": b"x"}), "unsafe path"),
    ("CharX zip bomb", lambda: make_zip(card_zip() | {"assets/other/big.bin": bytes(60_000_000)}),
     "the CharX file would expand to 60,00"),
    ("CharX huge card.json", lambda: make_zip({"card.json": b" " * 3_000_000}), "the CharX entry 'card.json' is 3,000,000 bytes"),
    ("CharX with too many entries", lambda: make_zip(card_zip() | {f"x/{i}": b"" for i in range(MAX_CHARX_ENTRIES)}),
     f"entries; the limit is {MAX_CHARX_ENTRIES:,}"),
    ("CharX with a bad card.json", lambda: make_zip({"card.json": b'{"data": 1, "spec": "chara_card_v3"}'}),
     "the CharX card.json holds no valid card: the card has no data object"),
    ("zip cut short", lambda: make_zip(card_zip())[:30], "the CharX file is not a valid zip archive"),
    ("named .png but JSON garbage", lambda: b"hello", "is not a PNG image"),
    ("a text file", lambda: b"Dear diary, today I met a knight.", "the file is not a character card: a card comes as a PNG, a CharX"),
    ("broken JSON", lambda: b'{"spec": "chara_card_v2", "data": {', "the card is not JSON"),
]


@pytest.mark.parametrize("label, make, message", BAD_FILES, ids=[b[0] for b in BAD_FILES])
def test_bad_files_are_refused_with_one_clear_line(label: str, make, message: str) -> None:
    filename = "ann.png" if label.startswith("named .png") else None
    with pytest.raises(InvalidInput) as info:
        read_card_file(make(), filename)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_file_over_the_limit_is_refused() -> None:
    png = good_png()
    with pytest.raises(InvalidInput, match=rf"^the file is {len(png):,} bytes; the limit is 1,000$"):
        read_card_file(png, max_bytes=1_000)
    assert read_card_file(png, max_bytes=len(png)).card  # the limit itself is allowed


def test_zip_headers_that_lie_about_sizes_do_not_expand() -> None:
    """card.json claims 100 bytes but inflates to 30 MB: reading stops at 100 bytes and fails."""
    blob = bytearray(make_zip({"card.json": b" " * 30_000_000}))
    local = blob.index(b"PK\x03\x04")
    central = blob.index(b"PK\x01\x02")
    struct.pack_into("<I", blob, local + 22, 100)  # uncompressed size in the local header
    struct.pack_into("<I", blob, central + 24, 100)  # and in the central directory
    with pytest.raises(InvalidInput, match="the CharX file is not a valid zip archive"):
        read_card_file(bytes(blob))


def test_entries_are_counted_while_read_not_only_from_headers(monkeypatch) -> None:
    """Should the zip reader trust a lying header, reading stops at the declared size all the same."""
    blob = make_zip({"card.json": json.dumps(v3_card()).encode()})
    monkeypatch.setattr(zipfile.ZipFile, "open", lambda self, info, *a, **k: io.BytesIO(b" " * 10_000_000))
    with pytest.raises(InvalidInput, match="the CharX entry 'card.json' expands past its declared size; refused"):
        read_card_file(blob)


def test_encrypted_charx_is_refused() -> None:
    blob = bytearray(make_zip(card_zip()))
    for sig, at in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        pos = blob.index(sig) + at
        struct.pack_into("<H", blob, pos, struct.unpack_from("<H", blob, pos)[0] | 1)
    with pytest.raises(InvalidInput, match="the CharX file is encrypted"):
        read_card_file(bytes(blob))


def test_damaged_files_only_ever_raise_invalid_input() -> None:
    rng = random.Random(1234)
    samples = [good_png(), write_charx(v3_card(), tiny_png()), json.dumps(v3_card()).encode()]
    for sample in samples:
        for _ in range(300):
            data = bytearray(sample)
            if rng.random() < 0.3:
                data = data[: rng.randrange(1, len(data))]
            for _ in range(rng.randint(1, 4)):
                data[rng.randrange(len(data))] = rng.randrange(256)
            try:
                got = read_card_file(bytes(data))
            except InvalidInput as exc:
                assert "\n" not in str(exc)
            else:
                assert normalise_card(got.card) == got.card


def test_writing_refuses_bad_avatars_and_bad_cards() -> None:
    with pytest.raises(InvalidInput, match="the avatar is not a PNG image"):
        write_png_card(v2_card(), b"\xff\xd8\xff\xe0 a jpeg")
    with pytest.raises(InvalidInput, match="the avatar is corrupt"):
        write_png_card(v2_card(), flipped(tiny_png(), 20))
    with pytest.raises(InvalidInput, match="the avatar is truncated"):
        write_charx(v2_card(), tiny_png()[:-5])
    bad = v2_card()
    bad["data"]["extensions"]["personae"]["mbti"] = "XYZW"
    with pytest.raises(InvalidInput, match="MBTI"):
        write_png_card(bad, None)
