"""Card files for the import tests of every adapter: good ones (PNG, CharX, JSON) and each kind of bad one."""

from __future__ import annotations

import base64
import io
import json
import struct
import zipfile
import zlib
from typing import Any, Callable

from core.card_files import MAX_CHARX_UNCOMPRESSED_BYTES, placeholder_png, write_charx, write_png_card


def foreign_card(name: str = "Ophelia") -> dict[str, Any]:
    """A V2 card made elsewhere: no ``personae`` extension, a foreign one that must be kept."""
    return {
        "spec": "chara_card_v2",
        "spec_version": "2.0",
        "data": {
            "name": name,
            "description": "A noblewoman of Denmark. She loves Hamlet and obeys her father.",
            "personality": "gentle, obedient, fragile",
            "scenario": "The castle gardens, in spring.",
            "first_mes": "My lord?",
            "mes_example": "<START>\n{{user}}: Are you well?\n{{char}}: (lowers her eyes) As well as a daughter may be.",
            "creator_notes": "",
            "system_prompt": "",
            "post_history_instructions": "",
            "alternate_greetings": [],
            "tags": ["shakespeare"],
            "creator": "someone",
            "character_version": "1",
            "extensions": {"some_other_app": {"keep": True}},
        },
    }


def avatar_png(name: str = "Ophelia") -> bytes:
    """An image to carry a card: the placeholder portrait (a real PNG, about 400x600)."""
    return placeholder_png(name)


def png_card(card: dict[str, Any] | None = None, image: bytes | None = None) -> bytes:
    card = card or foreign_card()
    return write_png_card(card, image if image is not None else avatar_png(card["data"]["name"]))


def charx_card(card: dict[str, Any] | None = None, image: bytes | None = None) -> bytes:
    card = card or foreign_card()
    return write_charx(card, image if image is not None else avatar_png(card["data"]["name"]))


def json_card(card: dict[str, Any] | None = None) -> bytes:
    return json.dumps(card or foreign_card()).encode()


def png_chunk(ctype: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + ctype + data + struct.pack(">I", zlib.crc32(data, zlib.crc32(ctype)))


def png_with_text(keyword: bytes, text: bytes) -> bytes:
    """The placeholder image with one tEXt chunk added before IEND."""
    image = avatar_png("X")
    iend = image.rindex(b"IEND") - 4
    return image[:iend] + png_chunk(b"tEXt", keyword + b"\x00" + text) + image[iend:]


def corrupt_png() -> bytes:
    """A card PNG with one byte of its image data changed: the chunk's CRC no longer matches."""
    data = bytearray(png_card())
    at = data.index(b"IDAT") + 10
    data[at] ^= 0xFF
    return bytes(data)


def zip_of(files: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return out.getvalue()


def charx_bomb() -> bytes:
    """A small CharX whose entries expand past the limit (zeros compress about 1000:1)."""
    return zip_of({"card.json": json_card(), "assets/filler.bin": bytes(MAX_CHARX_UNCOMPRESSED_BYTES + 1)})


def charx_escaping() -> bytes:
    """A CharX with an entry that points outside the archive."""
    return zip_of({"card.json": json_card(), "../../home/evil.png": b"\x89PNG"})


# (label, file name, how to make the bytes, what the one-line refusal says)
BAD_FILES: list[tuple[str, str, Callable[[], bytes], str]] = [
    ("png without a card", "nobody.png", lambda: avatar_png("Nobody"), "the PNG has no character card in it"),
    ("corrupt png", "ophelia.png", corrupt_png, "fails its CRC check"),
    ("bad base64", "ophelia.png", lambda: png_with_text(b"chara", b"@@not base64@@"), "is not valid base64"),
    ("invalid utf-8 in a png", "ophelia.png", lambda: png_with_text(b"chara", base64.b64encode(b'{"name": "\xff\xfe"}')), "is not UTF-8 text"),
    ("invalid utf-8 json", "ophelia.json", lambda: b'{"name": "Oph\xffelia"}', "the card is not valid UTF-8"),
    ("json that is not a card", "ophelia.json", lambda: b'{"hello": "world"}', "the card has no name"),
    ("json that is a list", "ophelia.json", lambda: b"[1, 2, 3]", "the card must be a JSON object"),
    ("charx that expands past the limit", "ophelia.charx", charx_bomb, "would expand to"),
    ("charx with a path outside itself", "ophelia.charx", charx_escaping, "unsafe path"),
]
