"""The figures of an evaluation: mean ± standard error per dimension, as a table, a JSON file and a PNG chart.

The standard error is the sample standard deviation over the dialogues divided by the square root
of their number, as AutoRPEval computes it. ``avg`` is the paper's Avg: the mean of character,
style, 100 - emotion error, 100 - relationship error and personality.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

from bots.eval.judge import DIMENSIONS, LOWER_IS_BETTER

LABELS = {
    "character": "Character",
    "style": "Style",
    "emotion_error": "Emotion error",
    "relationship_error": "Relationship error",
    "personality": "Personality (MBTI)",
    "avg": "Avg (CSERP)",
    "human_likeness": "Human-likeness",
    "coherence": "Coherence",
    "role_choice": "Role choice",
}
# Mistral-Nemo-BD-RP in the paper (AutoRPEval, GPT-4o judge, 300 dialogues).
PAPER = {
    "character": 74.58, "style": 78.47, "emotion_error": 16.62, "relationship_error": 11.38,
    "personality": 69.08, "avg": 78.83, "human_likeness": 59.00, "coherence": 92.67, "role_choice": 87.00,
}
ROWS = ("character", "style", "emotion_error", "relationship_error", "personality", "avg", "human_likeness", "coherence", "role_choice")


def mean_se(values: Sequence[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, None
    variance = sum((v - mean) ** 2 for v in values) / (len(values) - 1)
    return mean, math.sqrt(variance) / math.sqrt(len(values))


def _stat(values: Sequence[float], **extra: Any) -> dict[str, Any]:
    mean, se = mean_se(values)
    return {"mean": _round(mean), "se": _round(se), "n": len(values), **extra}


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def summarize(records: Sequence[Mapping[str, Any]], *, about: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The figures over the finished dialogues of ``records``."""
    done = [r for r in records if r.get("status") == "done"]
    dims: dict[str, Any] = {}
    for dim in DIMENSIONS:
        statuses = [r["judged"][dim]["status"] for r in done]
        values = [r["scores"][dim] for r in done if r["scores"][dim] is not None]
        dims[dim] = _stat(values, unparsed=statuses.count("unparsed"), skipped=statuses.count("skipped"))
    means = [dims[d]["mean"] for d in ("character", "style", "emotion_error", "relationship_error", "personality")]
    if all(m is not None for m in means):
        avg = (means[0] + means[1] + (100 - means[2]) + (100 - means[3]) + means[4]) / 5
        dims["avg"] = {"mean": round(avg, 2), "se": None, "n": min(dims[d]["n"] for d in ("character", "style", "emotion_error", "relationship_error", "personality"))}
    else:
        dims["avg"] = {"mean": None, "se": None, "n": 0}
    summary: dict[str, Any] = {
        "dialogues": len(done),
        "failed": len(records) - len(done),
        "dimensions": {d: dims[d] for d in ROWS},
        "paper_mistral_nemo_bd_rp": PAPER,
    }
    appraised = [r["appraiser"] for r in done if r.get("appraiser")]
    if appraised:
        asked = sum(a["asked"] for a in appraised)
        summary["appraiser"] = {
            "kind": appraised[0]["kind"],
            "exchanges": asked,
            "emotion_parsed": _round(100.0 * sum(a["emotion_read"] for a in appraised) / asked) if asked else None,
            "relationship_parsed": _round(100.0 * sum(a["relationship_read"] for a in appraised) / asked) if asked else None,
            "emotion_error": _stat([a["emotion_error"] for a in appraised if a["emotion_error"] is not None]),
            "relationship_error": _stat([a["relationship_error"] for a in appraised if a["relationship_error"] is not None]),
        }
        cadences = cadence_summary(appraised)
        if cadences:
            summary["appraiser"]["cadences"] = cadences
    if about:
        summary["about"] = dict(about)
    return summary


def cadence_summary(appraised: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Per cadence (``bots.eval.cadences``), over the dialogues that measured it: what it asked and
    what it cost in all, the share of its appraisals that gave a reading, the readings' error and the
    error of the state it reached (mean over a dialogue's exchanges, then over dialogues); ``start``
    is the state no appraisal moves, for reference."""
    measured = [a for a in appraised if isinstance(a.get("cadences"), dict)]
    if not measured:
        return {}
    out: dict[str, Any] = {
        "start": {
            "dialogues": len(measured),
            "state_emotion_error": _stat([a["start_emotion_error"] for a in measured]),
            "state_relationship_error": _stat([a["start_relationship_error"] for a in measured]),
        }
    }
    names: list[str] = []
    for a in measured:
        names += [n for n in a["cadences"] if n not in names]
    for name in names:
        rows = [a["cadences"][name] for a in measured if name in a["cadences"]]
        appraisals = sum(r["appraised"] for r in rows)
        exchanges = sum(a["exchanges"] for a in measured if name in a["cadences"])
        pct = lambda k: _round(100.0 * sum(r[k] for r in rows) / appraisals) if appraisals else None  # noqa: E731
        out[name] = {
            "dialogues": len(rows),
            "exchanges": exchanges,
            "appraised": appraisals,
            "calls": sum(r["calls"] for r in rows),
            "prompt_tokens": sum(r["prompt_tokens"] for r in rows),
            "answer_tokens": sum(r["answer_tokens"] for r in rows),
            "emotion_parsed": pct("emotion_read"),
            "relationship_parsed": pct("relationship_read"),
            "emotion_error": _stat([r["emotion_error"] for r in rows if r["emotion_error"] is not None]),
            "relationship_error": _stat([r["relationship_error"] for r in rows if r["relationship_error"] is not None]),
            "state_emotion_error": _stat([r["state_emotion_error"] for r in rows if r["state_emotion_error"] is not None]),
            "state_relationship_error": _stat(
                [r["state_relationship_error"] for r in rows if r["state_relationship_error"] is not None]),
            "final_emotion_error": _stat([r["final_emotion_error"] for r in rows if r["final_emotion_error"] is not None]),
            "final_relationship_error": _stat(
                [r["final_relationship_error"] for r in rows if r["final_relationship_error"] is not None]),
        }
    return out


def cadence_table(summary: Mapping[str, Any]) -> str:
    """The cadences side by side: cost (appraisals, model requests, tokens) against accuracy; '' if none was measured."""
    cadences = (summary.get("appraiser") or {}).get("cadences")
    if not cadences:
        return ""
    rows = [("cadence", "appraised", "requests", "tokens in/out", "parsed E/R",
             "reading E err", "reading R err", "state E err", "state R err")]
    for name, c in cadences.items():
        if name == "start":
            continue
        rows.append((
            name, f"{c['appraised']}/{c['exchanges']}", str(c["calls"]), f"{c['prompt_tokens']}/{c['answer_tokens']}",
            f"{_pct(c['emotion_parsed'])}/{_pct(c['relationship_parsed'])}",
            _cell(c["emotion_error"]), _cell(c["relationship_error"]),
            _cell(c["state_emotion_error"]), _cell(c["state_relationship_error"]),
        ))
    start = cadences["start"]
    rows.append(("(start, no appraisal)", "0", "0", "0/0", "-", "-", "-",
                 _cell(start["state_emotion_error"]), _cell(start["state_relationship_error"])))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _cell(stat: Mapping[str, Any]) -> str:
    if stat["mean"] is None:
        return "-"
    return f"{stat['mean']:.2f} ± {stat['se']:.2f}" if stat.get("se") is not None else f"{stat['mean']:.2f}"


def table(summary: Mapping[str, Any]) -> str:
    """The figures as a plain-text table (percentages; errors: lower is better)."""
    rows = [("dimension", "mean ± SE", "n", "unparsed", "paper BD-RP")]
    for dim in ROWS:
        stat = summary["dimensions"][dim]
        name = LABELS[dim] + (" ↓" if dim in LOWER_IS_BETTER else "")
        unparsed = str(stat.get("unparsed", "")) if dim != "avg" else ""
        if stat.get("skipped"):
            unparsed = f"{unparsed} ({stat['skipped']} not asked)"
        rows.append((name, _cell(stat), str(stat["n"]), unparsed, f"{PAPER[dim]:.2f}"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append(f"dialogues: {summary['dialogues']}" + (f" (and {summary['failed']} failed)" if summary["failed"] else ""))
    appraiser = summary.get("appraiser")
    if appraiser:
        lines.append(
            f"appraiser ({appraiser['kind']}), {appraiser['exchanges']} exchanges: "
            f"emotion error {_cell(appraiser['emotion_error'])} (parsed {_pct(appraiser['emotion_parsed'])}), "
            f"relationship error {_cell(appraiser['relationship_error'])} (parsed {_pct(appraiser['relationship_parsed'])})"
        )
        cadences = cadence_table(summary)
        if cadences:
            lines += ["", "appraisal cadences (errors in percent; state: after each exchange, from emotions 0, intimacy 5):", cadences]
    return "\n".join(lines)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}%"


def write_json(summary: Mapping[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")


def write_chart(summary: Mapping[str, Any], path: Path, *, title: str = "personae eval") -> None:
    """A horizontal bar per dimension (0-100) with its standard error and the paper's figure as a tick."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default()
    left, right, top, row_h, bar_h = 190, 40, 56, 34, 16
    scale_w = 480
    width = left + scale_w + right + 120
    height = top + row_h * len(ROWS) + 50
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    draw.text((12, 12), title, fill="black", font=font)
    draw.text((12, 30), f"{summary['dialogues']} dialogues; bars: mean ± SE (percent); black tick: the paper's Mistral-Nemo-BD-RP", fill="#444", font=font)
    x0 = left
    for tick in range(0, 101, 20):
        x = x0 + scale_w * tick / 100
        draw.line([(x, top - 4), (x, top + row_h * len(ROWS))], fill="#ddd")
        draw.text((x - 6, top + row_h * len(ROWS) + 6), str(tick), fill="#444", font=font)
    for i, dim in enumerate(ROWS):
        stat = summary["dimensions"][dim]
        y = top + i * row_h + (row_h - bar_h) / 2
        name = LABELS[dim] + (" (lower is better)" if dim in LOWER_IS_BETTER else "")
        draw.text((12, y + 2), name, fill="black", font=font)
        mean = stat["mean"]
        if mean is None:
            draw.text((x0 + 4, y + 2), "no score", fill="#a00", font=font)
        else:
            colour = "#d9822b" if dim in LOWER_IS_BETTER else "#3a78b5"
            draw.rectangle([x0, y, x0 + scale_w * max(0.0, min(mean, 100.0)) / 100, y + bar_h], fill=colour)
            if stat.get("se"):
                lo = x0 + scale_w * max(0.0, mean - stat["se"]) / 100
                hi = x0 + scale_w * min(100.0, mean + stat["se"]) / 100
                mid = y + bar_h / 2
                draw.line([(lo, mid), (hi, mid)], fill="black", width=2)
                draw.line([(lo, y + 3), (lo, y + bar_h - 3)], fill="black", width=2)
                draw.line([(hi, y + 3), (hi, y + bar_h - 3)], fill="black", width=2)
            draw.text((x0 + scale_w + 8, y + 2), _cell(stat), fill="black", font=font)
        paper_x = x0 + scale_w * PAPER[dim] / 100
        draw.line([(paper_x, y - 3), (paper_x, y + bar_h + 3)], fill="black", width=3)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format="PNG")
