"""The /mood picture: a character's six emotions and intimacy toward one person, as bars, each with
its course over the last changes beside it. Drawn with Pillow, in a thread (it is CPU work)."""

from __future__ import annotations

import asyncio
import io
from typing import Sequence

from PIL import Image, ImageDraw, ImageFont

from core.commands import Outcome
from core.emotions import EMOTIONS, SCALE_MAX
from core.state import RelationshipState

COLOURS = {
    "happiness": (242, 183, 5), "sadness": (59, 125, 216), "disgust": (90, 158, 58), "fear": (142, 91, 196),
    "surprise": (242, 140, 40), "anger": (216, 67, 59), "intimacy": (224, 97, 155),
}
BACKGROUND, TRACK, INK, FAINT = (250, 248, 244), (228, 224, 216), (40, 40, 40), (150, 146, 140)
WIDTH, ROW, TOP, MARGIN = 760, 46, 56, 20
LABEL_W, BAR_X, BAR_W, VALUE_X, LINE_X = 110, 140, 240, 392, 440
LINE_W = WIDTH - LINE_X - MARGIN


def _levels(state: RelationshipState) -> dict[str, int]:
    return {**state.emotion.as_dict(), "intimacy": state.intimacy}


def render_mood(state: RelationshipState, course: Sequence[RelationshipState] = (), *, title: str | None = None) -> bytes:
    """A PNG of ``state`` (bars) and ``course`` (oldest first; one line per dimension)."""
    rows = [*EMOTIONS, "intimacy"]
    height = TOP + ROW * len(rows) + MARGIN
    image = Image.new("RGB", (WIDTH, height), BACKGROUND)
    draw = ImageDraw.Draw(image)
    font, small = ImageFont.load_default(16), ImageFont.load_default(12)
    # The bundled font has no CJK glyphs: a title it cannot draw is left to the message's text.
    heading = title if title and title.isascii() else "Mood"
    draw.text((MARGIN, 16), heading[:70], fill=INK, font=font)
    points = [_levels(s) for s in course] or [_levels(state)]
    draw.text((LINE_X, 20), f"last {len(points)} state{'s' if len(points) != 1 else ''}, oldest first", fill=FAINT, font=small)
    now = _levels(state)
    for i, name in enumerate(rows):
        y = TOP + i * ROW
        mid = y + ROW // 2
        colour = COLOURS[name]
        draw.text((MARGIN, mid - 9), name, fill=INK, font=font)
        draw.rounded_rectangle((BAR_X, mid - 8, BAR_X + BAR_W, mid + 8), radius=8, fill=TRACK)
        if now[name]:
            draw.rounded_rectangle((BAR_X, mid - 8, BAR_X + BAR_W * now[name] // SCALE_MAX, mid + 8), radius=8, fill=colour)
        draw.text((VALUE_X, mid - 9), str(now[name]), fill=INK, font=font)
        # The course: a line from 0 (bottom of the row) to 10 (top), with a dot per state.
        top, bottom = y + 6, y + ROW - 6
        draw.line((LINE_X, bottom, LINE_X + LINE_W, bottom), fill=TRACK, width=1)
        step = LINE_W / max(len(points) - 1, 1)
        xy = [(LINE_X + j * step, bottom - (bottom - top) * p[name] / SCALE_MAX) for j, p in enumerate(points)]
        if len(xy) > 1:
            draw.line(xy, fill=colour, width=3, joint="curve")
        for x, yy in xy:
            draw.ellipse((x - 3, yy - 3, x + 3, yy + 3), fill=colour)
    out = io.BytesIO()
    image.save(out, format="PNG", optimize=True)
    return out.getvalue()


async def mood_png(outcome: Outcome) -> bytes | None:
    """The picture for a /mood outcome (None when it has no state to show), drawn in a thread."""
    if not outcome.ok or outcome.state is None:
        return None
    title = f"{outcome.character.name}" if outcome.character is not None else None
    return await asyncio.to_thread(render_mood, outcome.state, outcome.course, title=title)
