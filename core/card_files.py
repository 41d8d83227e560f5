"""Character card files: PNG (``chara``/``ccv3`` text chunks), CharX (zip) and JSON.

Reading detects the format by content, never by file name, and every bad input ends in one
``InvalidInput`` with a one-line message. The card inside goes through ``normalise_card``, the same
validation as a JSON import, so unknown fields and foreign ``extensions`` keys are kept.

PNG chunks are read and written with the standard library only: a PNG is the 8-byte signature,
then chunks of length (4 bytes, big-endian) + type (4) + data + CRC-32 of type and data. Pillow is
used only, when installed, to draw the placeholder avatar of a card that has none.

Writing a PNG follows SillyTavern: the card goes in twice, before IEND, replacing older card chunks:

* ``chara``: the card as V2 (``to_v2``). A V3 card is relabelled ``chara_card_v2``/``2.0`` and the
  data fields that exist only in V3 (``V3_ONLY_FIELDS``) are dropped; everything else (unknown
  fields, every ``extensions`` key, the lorebook) is kept. No "this card was backfilled" warning is
  written into ``creator_notes``: SillyTavern does not write one, and a reader that falls back on
  ``chara`` would show it to users as if the creator had written it.
* ``ccv3``: the card as V3 (``to_v3``): ``chara_card_v3``/``3.0`` with ``group_only_greetings``
  (required in V3) added when missing; nothing is dropped.

Readers take ``ccv3`` when both are present, so a V2 card exported as PNG comes back as V3, and
``to_v2`` of it gives the V2 card back.
"""

from __future__ import annotations

import base64
import binascii
import colorsys
import hashlib
import io
import json
import re
import struct
import zipfile
import zlib
from dataclasses import dataclass
from typing import Any, Mapping

from core.cards import MAX_CARD_JSON_BYTES, SPEC_V2, SPEC_V3, card_json, normalise_card, parse_card_json
from core.errors import InvalidInput

__all__ = [
    "CardFile",
    "EXPORT_FORMATS",
    "MAX_CHARX_ENTRIES",
    "MAX_CHARX_UNCOMPRESSED_BYTES",
    "MAX_FILE_BYTES",
    "V3_ONLY_FIELDS",
    "avatar_png",
    "export_card",
    "placeholder_png",
    "read_card_file",
    "to_v2",
    "to_v3",
    "write_charx",
    "write_png_card",
]

MAX_FILE_BYTES = 20_000_000
MAX_CHARX_UNCOMPRESSED_BYTES = 50_000_000
MAX_CHARX_ENTRIES = 1_000
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_ZIP_SIGNATURES = (b"PK\x03\x04", b"PK\x05\x06")  # an archive with entries; an empty archive
_CARD_KEYWORDS = ("ccv3", "chara")  # in order of preference
_TEXT_CHUNKS = (b"tEXt", b"zTXt", b"iTXt")
# Base64 of the largest card JSON we accept, with room for line breaks.
_MAX_CARD_TEXT_CHARS = MAX_CARD_JSON_BYTES * 3 // 2 + 1_024
# Data fields that exist only in V3; ``to_v2`` drops them from a V3 card.
V3_ONLY_FIELDS = (
    "assets",
    "nickname",
    "creator_notes_multilingual",
    "source",
    "group_only_greetings",
    "creation_date",
    "modification_date",
)
CHARX_ICON_PATH = "assets/icon/images/main.png"
_EMBEDDED_PREFIXES = ("embeded://", "embedded://")  # the spec's spelling, and the usual one
PLACEHOLDER_SIZE = (400, 600)
_ZIP_ERRORS = (
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    zlib.error,
    EOFError,
    OSError,
    ValueError,
    NotImplementedError,
    RuntimeError,
    struct.error,
)


@dataclass(frozen=True, slots=True)
class CardFile:
    """A card read from a file, with its avatar image when the file carried one."""

    card: dict[str, Any]
    avatar: bytes | None
    avatar_ext: str | None  # "png", "jpg", "webp", ...; None when there is no avatar
    source_format: str  # "json", "png" or "charx"


# --- reading ------------------------------------------------------------------------------------


def read_card_file(
    data: bytes, filename: str | None = None, *, max_bytes: int = MAX_FILE_BYTES
) -> CardFile:
    """Read a character card from a PNG, CharX or JSON file's bytes.

    The format is told from the content. ``filename`` only makes error messages clearer.
    Raises InvalidInput, with one line saying what is wrong, for any file that is not a valid card.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise InvalidInput(f"the file must be bytes, not {type(data).__name__}")
    data = bytes(data)
    if not data:
        raise InvalidInput("the file is empty")
    if len(data) > max_bytes:
        raise InvalidInput(f"the file is {len(data):,} bytes; the limit is {max_bytes:,}")
    if data.startswith(PNG_SIGNATURE):
        return _read_png(data)
    if data[:4] in _ZIP_SIGNATURES:
        return _read_charx(data, max_bytes)
    return _read_json(data, filename)


def _parse_card(raw: bytes | str) -> dict[str, Any]:
    """``parse_card_json``, with JSON nested too deeply for Python refused like any bad card."""
    try:
        return parse_card_json(raw)
    except RecursionError:
        raise InvalidInput("the card is nested too deeply to read") from None


def _read_json(data: bytes, filename: str | None) -> CardFile:
    kind = _sniff_image(data)
    if kind is not None:
        raise InvalidInput(
            f"the file is a {kind.upper()} image; a character card comes as a PNG, a CharX (.charx) or JSON file"
        )
    try:
        card = _parse_card(data)
    except InvalidInput:
        suffix = (filename or "").rpartition(".")[2].lower()
        if suffix == "png":
            raise InvalidInput(f"{_name(filename)} is not a PNG image (it lacks the PNG signature)") from None
        if suffix in ("charx", "zip"):
            raise InvalidInput(f"{_name(filename)} is not a CharX file (it is not a zip archive)") from None
        if not data.lstrip(b"\xef\xbb\xbf \t\r\n").startswith((b"{", b"[")):
            raise InvalidInput(
                f"{_name(filename) if filename else 'the file'} is not a character card: a card comes as a PNG, a CharX (.charx) or a JSON file"
            ) from None
        raise
    return CardFile(card=card, avatar=None, avatar_ext=None, source_format="json")


def _read_png(data: bytes) -> CardFile:
    found: dict[str, _Chunk] = {}
    for chunk in _png_chunks(data, "the PNG"):
        keyword = _card_keyword(chunk)
        if keyword is not None and keyword not in found:
            found[keyword] = chunk
    for keyword in _CARD_KEYWORDS:
        if keyword in found:
            card = _card_from_chunk(found[keyword], keyword)
            return CardFile(card=card, avatar=data, avatar_ext="png", source_format="png")
    raise InvalidInput("the PNG has no character card in it (no 'chara' or 'ccv3' text chunk)")


@dataclass(frozen=True, slots=True)
class _Chunk:
    type: bytes
    data: bytes
    raw: bytes  # the whole chunk as it is in the file: length, type, data, CRC
    offset: int


def _png_chunks(png: bytes, what: str) -> list[_Chunk]:
    """Split a PNG into chunks, checking the signature, every length and every CRC."""
    if not png.startswith(PNG_SIGNATURE):
        raise InvalidInput(f"{what} is not a PNG image (it lacks the PNG signature)")
    chunks: list[_Chunk] = []
    pos, size = len(PNG_SIGNATURE), len(png)
    while True:
        if pos + 12 > size:
            raise InvalidInput(f"{what} is truncated: it ends at byte {size:,}, before its IEND chunk")
        length, ctype = struct.unpack_from(">I4s", png, pos)
        if not (ctype.isascii() and ctype.isalpha()):
            raise InvalidInput(f"{what} is corrupt: the chunk at byte {pos:,} has an invalid type {ctype!r}")
        name = ctype.decode("ascii")
        if length > 0x7FFF_FFFF:
            raise InvalidInput(f"{what} is corrupt: the {name!r} chunk at byte {pos:,} has an impossible length")
        end = pos + 12 + length
        if end > size:
            raise InvalidInput(
                f"{what} is truncated: the {name!r} chunk at byte {pos:,} runs past the end of the file"
            )
        body = png[pos + 8 : end - 4]
        (crc,) = struct.unpack_from(">I", png, end - 4)
        if zlib.crc32(body, zlib.crc32(ctype)) != crc:
            raise InvalidInput(f"{what} is corrupt: the {name!r} chunk at byte {pos:,} fails its CRC check")
        if not chunks and ctype != b"IHDR":
            raise InvalidInput(f"{what} is corrupt: it does not start with an IHDR chunk")
        chunks.append(_Chunk(type=ctype, data=body, raw=png[pos:end], offset=pos))
        pos = end
        if ctype == b"IEND":
            return chunks  # anything after IEND is ignored, as image viewers do


def _card_keyword(chunk: _Chunk) -> str | None:
    """``ccv3`` or ``chara`` when the chunk is a text chunk holding a card, else None."""
    if chunk.type not in _TEXT_CHUNKS:
        return None
    keyword = chunk.data.split(b"\x00", 1)[0].decode("latin-1").lower()
    return keyword if keyword in _CARD_KEYWORDS else None


def _card_from_chunk(chunk: _Chunk, keyword: str) -> dict[str, Any]:
    what = f"the PNG's {keyword!r} chunk"
    text = _chunk_text(chunk, what)
    b64 = "".join(text.split())
    b64 += "=" * (-len(b64) % 4)
    try:
        raw = base64.b64decode(b64.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise InvalidInput(f"{what} is not valid base64") from None
    try:
        card_text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"{what} is not UTF-8 text once base64-decoded (bad byte at {exc.start:,})") from None
    try:
        return _parse_card(card_text)
    except InvalidInput as exc:
        raise InvalidInput(f"{what} holds no valid card: {exc}") from None


def _chunk_text(chunk: _Chunk, what: str) -> str:
    """The text of a tEXt, zTXt or iTXt chunk."""
    keyword, sep, rest = chunk.data.partition(b"\x00")
    if not sep:
        raise InvalidInput(f"{what} is malformed (no NUL after its keyword)")
    if chunk.type == b"tEXt":
        return rest.decode("latin-1")
    if chunk.type == b"zTXt":
        if rest[:1] != b"\x00":
            raise InvalidInput(f"{what} uses an unknown compression method")
        return _inflate(rest[1:], what).decode("latin-1")
    # iTXt: compression flag, compression method, language tag\0, translated keyword\0, text
    if len(rest) < 2:
        raise InvalidInput(f"{what} is malformed (too short)")
    flag, method, rest = rest[0], rest[1], rest[2:]
    parts = rest.split(b"\x00", 2)
    if len(parts) != 3:
        raise InvalidInput(f"{what} is malformed (missing language tag or translated keyword)")
    body = parts[2]
    if flag:
        if method != 0:
            raise InvalidInput(f"{what} uses an unknown compression method")
        body = _inflate(body, what)
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"{what} is not UTF-8 text (bad byte at {exc.start:,})") from None


def _inflate(data: bytes, what: str) -> bytes:
    """zlib-decompress at most ``_MAX_CARD_TEXT_CHARS`` bytes; more is refused (no bombs)."""
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(data, _MAX_CARD_TEXT_CHARS + 1)
    except zlib.error:
        raise InvalidInput(f"{what} holds corrupt compressed data") from None
    if len(out) > _MAX_CARD_TEXT_CHARS:
        raise InvalidInput(f"{what} expands past {_MAX_CARD_TEXT_CHARS:,} bytes")
    if not inflater.eof:
        raise InvalidInput(f"{what} holds truncated compressed data")
    return out


def _read_charx(data: bytes, max_bytes: int) -> CardFile:
    try:
        return _read_charx_zip(data, max_bytes)
    except _ZIP_ERRORS as exc:
        reason = _one_line(str(exc)) or type(exc).__name__
        raise InvalidInput(f"the CharX file is not a valid zip archive ({reason})") from None


def _read_charx_zip(data: bytes, max_bytes: int) -> CardFile:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        infos = archive.infolist()
        if len(infos) > MAX_CHARX_ENTRIES:
            raise InvalidInput(
                f"the CharX file has {len(infos):,} entries; the limit is {MAX_CHARX_ENTRIES:,}"
            )
        by_name: dict[str, zipfile.ZipInfo] = {}
        declared = 0
        for info in infos:
            if _unsafe_path(info.filename):
                raise InvalidInput(f"the CharX file holds an unsafe path {info.filename!r}; refused")
            if info.filename in by_name:
                raise InvalidInput(f"the CharX file holds {info.filename!r} twice; refused")
            if info.flag_bits & 0x1:
                raise InvalidInput("the CharX file is encrypted; it cannot be read")
            by_name[info.filename] = info
            declared += info.file_size
        if declared > MAX_CHARX_UNCOMPRESSED_BYTES:
            raise InvalidInput(
                f"the CharX file would expand to {declared:,} bytes; the limit is {MAX_CHARX_UNCOMPRESSED_BYTES:,}"
            )
        budget = _Budget(MAX_CHARX_UNCOMPRESSED_BYTES)
        card_info = by_name.get("card.json")
        if card_info is None or card_info.is_dir():
            raise InvalidInput("the CharX file has no card.json at its root")
        raw = _read_member(archive, card_info, MAX_CARD_JSON_BYTES, budget)
        try:
            card = _parse_card(raw)
        except InvalidInput as exc:
            raise InvalidInput(f"the CharX card.json holds no valid card: {exc}") from None
        icon = _charx_icon(card, by_name)
        if icon is None:
            return CardFile(card=card, avatar=None, avatar_ext=None, source_format="charx")
        asset, info = icon
        avatar = _read_member(archive, info, max_bytes, budget)
        ext = _image_ext(avatar, asset, info.filename)
        return CardFile(card=card, avatar=avatar, avatar_ext=ext, source_format="charx")


class _Budget:
    """Bytes that may still be inflated from an archive, counted as they come out."""

    def __init__(self, limit: int) -> None:
        self.limit = self.left = limit

    def spend(self, n: int) -> None:
        self.left -= n
        if self.left < 0:
            raise InvalidInput(f"the CharX file expands past {self.limit:,} bytes; refused")


def _read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int, budget: _Budget) -> bytes:
    """Read one entry in pieces, never trusting its header: stop at its declared size or ``limit``."""
    if info.file_size > limit:
        raise InvalidInput(f"the CharX entry {info.filename!r} is {info.file_size:,} bytes; the limit is {limit:,}")
    out = bytearray()
    with archive.open(info) as member:
        while piece := member.read(1 << 16):
            out += piece
            budget.spend(len(piece))
            if len(out) > info.file_size or len(out) > limit:
                raise InvalidInput(f"the CharX entry {info.filename!r} expands past its declared size; refused")
    return bytes(out)


def _unsafe_path(name: str) -> bool:
    """Whether a zip entry name could point outside the archive (absolute, drive, ``..``)."""
    if not name or "\x00" in name or name.startswith(("/", "\\")) or re.match(r"[A-Za-z]:", name):
        return True
    return any(part == ".." for part in re.split(r"[/\\]", name))


def _charx_icon(card: Mapping[str, Any], by_name: Mapping[str, zipfile.ZipInfo]) -> tuple[dict, zipfile.ZipInfo] | None:
    """The main icon asset of a CharX card and its zip entry, when it is embedded in the archive."""
    assets = card["data"].get("assets")
    if not isinstance(assets, list):
        return None
    icons = [a for a in assets if isinstance(a, dict) and a.get("type") == "icon" and isinstance(a.get("uri"), str)]
    if not icons:
        return None
    main = next((a for a in icons if a.get("name") == "main"), icons[0])
    uri: str = main["uri"]
    for prefix in _EMBEDDED_PREFIXES:
        if uri.startswith(prefix):
            info = by_name.get(uri[len(prefix) :])
            if info is not None and not info.is_dir():
                return main, info
    return None  # ccdefault:, a URL, or a missing entry: no avatar


def _image_ext(image: bytes, asset: Mapping[str, Any], path: str) -> str:
    kind = _sniff_image(image)
    if kind is not None:
        return kind
    for candidate in (asset.get("ext"), path.rsplit("/", 1)[-1].rpartition(".")[2]):
        if isinstance(candidate, str) and re.fullmatch(r"[a-z0-9]{1,10}", candidate.lower()):
            return candidate.lower()
    return "bin"


def _sniff_image(data: bytes) -> str | None:
    if data.startswith(PNG_SIGNATURE):
        return "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpg"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    if data[4:12] in (b"ftypavif", b"ftypavis"):
        return "avif"
    return None


def _name(filename: str | None) -> str:
    return repr(_one_line(filename or "")[:120])


def _one_line(text: str) -> str:
    return " ".join(text.split())


# --- V2 / V3 ------------------------------------------------------------------------------------


def to_v3(card: Mapping[str, Any]) -> dict[str, Any]:
    """The card as V3 (a validated deep copy): spec ``chara_card_v3``/``3.0``, ``group_only_greetings`` present.

    Nothing is dropped. A card that is already V3 keeps its ``spec_version``.
    """
    new = normalise_card(card)
    if new["spec"] != SPEC_V3:
        new["spec"], new["spec_version"] = SPEC_V3, "3.0"
    if new["data"].get("group_only_greetings") is None:
        new["data"]["group_only_greetings"] = []
    return new


def to_v2(card: Mapping[str, Any]) -> dict[str, Any]:
    """The card as V2 (a validated deep copy).

    A V2 card comes back unchanged. A V3 card is relabelled ``chara_card_v2``/``2.0`` and loses the
    V3-only data fields (``V3_ONLY_FIELDS``); every other field and every ``extensions`` key stays.
    """
    new = normalise_card(card)
    if new["spec"] == SPEC_V3:
        new["spec"], new["spec_version"] = SPEC_V2, "2.0"
        for key in V3_ONLY_FIELDS:
            new["data"].pop(key, None)
    return new


# --- writing ------------------------------------------------------------------------------------

EXPORT_FORMATS = ("json", "png", "charx")


def export_card(card: Mapping[str, Any], avatar: bytes | None, fmt: str) -> bytes:
    """The card as a file's bytes: ``json`` (pretty UTF-8), ``png`` (``write_png_card``) or ``charx``.

    For PNG and CharX the avatar goes through ``avatar_png``: an image that is not a PNG is
    converted, and a character without one gets the placeholder.
    """
    if fmt == "json":
        return card_json(card).encode("utf-8")  # the card exactly as stored
    if fmt not in EXPORT_FORMATS:
        raise InvalidInput(f"unknown format {fmt!r}; supported: {', '.join(EXPORT_FORMATS)}")
    png = avatar_png(avatar) if avatar is not None else None
    return write_png_card(card, png) if fmt == "png" else write_charx(card, png)


def avatar_png(image: bytes) -> bytes | None:
    """``image`` as a sound PNG: itself when it is one, else converted with Pillow; None when neither works."""
    if image.startswith(PNG_SIGNATURE):
        try:
            _png_chunks(image, "the avatar")
            return image
        except InvalidInput:
            pass  # a damaged PNG: Pillow may still read it
    try:
        from PIL import Image
    except ImportError:
        return None
    try:
        with Image.open(io.BytesIO(image)) as picture:
            picture.load()
            if picture.mode not in ("RGB", "RGBA", "L", "LA", "P"):
                picture = picture.convert("RGBA")
            out = io.BytesIO()
            picture.save(out, format="PNG")
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return None
    return out.getvalue()


def write_png_card(card: Mapping[str, Any], avatar_png: bytes | None) -> bytes:
    """The avatar PNG with the card in a ``chara`` (V2) and a ``ccv3`` (V3) chunk, before IEND.

    Existing ``chara``/``ccv3`` chunks (tEXt, zTXt or iTXt) are removed; every other chunk is kept
    byte for byte. With no avatar, a placeholder image is drawn (``placeholder_png``).
    """
    v2, v3 = to_v2(card), to_v3(card)
    png = placeholder_png(v3["data"]["name"]) if avatar_png is None else bytes(avatar_png)
    chunks = _png_chunks(png, "the avatar")
    parts = [PNG_SIGNATURE]
    parts += [c.raw for c in chunks if c.type != b"IEND" and _card_keyword(c) is None]
    parts.append(_png_chunk(b"tEXt", b"chara\x00" + _b64_json(v2)))
    parts.append(_png_chunk(b"tEXt", b"ccv3\x00" + _b64_json(v3)))
    parts.append(chunks[-1].raw)  # IEND
    return b"".join(parts)


def write_charx(card: Mapping[str, Any], avatar_png: bytes | None) -> bytes:
    """A CharX zip: ``card.json`` (V3) and the avatar as the main icon at ``assets/icon/images/main.png``.

    The card's ``assets`` list gets the main icon first (``embeded://`` URI, the spec's spelling);
    its other assets are kept as they are. With no avatar, a placeholder image is drawn.
    """
    v3 = to_v3(card)
    png = placeholder_png(v3["data"]["name"]) if avatar_png is None else bytes(avatar_png)
    _png_chunks(png, "the avatar")  # refuse anything that is not a sound PNG
    assets = v3["data"].get("assets")
    others = [
        a for a in (assets if isinstance(assets, list) else [])
        if not (isinstance(a, dict) and a.get("type") == "icon" and a.get("name") == "main")
    ]
    icon = {"type": "icon", "uri": f"embeded://{CHARX_ICON_PATH}", "name": "main", "ext": "png"}
    v3["data"]["assets"] = [icon, *others]
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        stamp = (1980, 1, 1, 0, 0, 0)  # fixed, so the same card gives the same bytes
        info = zipfile.ZipInfo("card.json", date_time=stamp)
        info.compress_type = zipfile.ZIP_DEFLATED
        archive.writestr(info, _card_json_bytes(v3))
        info = zipfile.ZipInfo(CHARX_ICON_PATH, date_time=stamp)
        info.compress_type = zipfile.ZIP_STORED  # PNG data is compressed already
        archive.writestr(info, png)
    return out.getvalue()


def _card_json_bytes(card: Mapping[str, Any]) -> bytes:
    try:
        return json.dumps(card, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"the card cannot be written as JSON: {_one_line(str(exc))}") from None


def _b64_json(card: Mapping[str, Any]) -> bytes:
    return base64.b64encode(_card_json_bytes(card))


def _png_chunk(ctype: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + ctype + data + struct.pack(">I", zlib.crc32(data, zlib.crc32(ctype)))


def placeholder_png(name: str, size: tuple[int, int] = PLACEHOLDER_SIZE) -> bytes:
    """A portrait-shaped PNG in a colour derived from ``name``, with its initials when Pillow can draw them.

    Without Pillow, a plain-colour PNG is written with zlib.
    """
    digest = hashlib.sha256(name.encode("utf-8")).digest()
    r, g, b = colorsys.hsv_to_rgb(digest[0] / 256, 0.35 + digest[1] / 1024, 0.55 + digest[2] / 1024)
    colour = (round(r * 255), round(g * 255), round(b * 255))
    try:
        from PIL import Image, ImageDraw, ImageFont
    except ImportError:
        return _plain_png(size, colour)
    image = Image.new("RGB", size, colour)
    initials = "".join(word[0] for word in name.split()[:2]).upper()
    # The default font covers Latin scripts; other initials would come out as boxes.
    if initials and all(ord(c) < 0x250 for c in initials):
        try:
            font = ImageFont.load_default(size=size[0] * 2 // 5)
            ImageDraw.Draw(image).text(
                (size[0] / 2, size[1] / 2), initials, fill=(255, 255, 255), font=font, anchor="mm"
            )
        except (OSError, ValueError, TypeError):
            pass  # an old Pillow without FreeType: the plain colour will do
    out = io.BytesIO()
    image.save(out, format="PNG", optimize=True)
    return out.getvalue()


def _plain_png(size: tuple[int, int], colour: tuple[int, int, int]) -> bytes:
    width, height = size
    row = b"\x00" + bytes(colour) * width  # filter type 0, then RGB pixels
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB, no interlace
    return b"".join(
        (
            PNG_SIGNATURE,
            _png_chunk(b"IHDR", ihdr),
            _png_chunk(b"IDAT", zlib.compress(row * height, 9)),
            _png_chunk(b"IEND", b""),
        )
    )
