"""Model tokens per turn, for ``personae bench``: what the model server is asked to read and write.

The double counts every generation request it answers (``bots.llm.token_ledger``); the bench reads
that ledger one conversation at a time and works out, per turn:

- prompt and completion tokens of the reply and of the appraisal (the model appraiser's two
  requests, emotion and relationship, added together);
- the shared prefix: how many leading tokens of a prompt repeat the previous prompt of the same
  kind in the same conversation (the reply before, the emotion appraisal before, ...), which is what a
  server's prefix cache can reuse, as tokens and as a share of the prompt; also against any
  earlier prompt of the conversation (a cache that keeps everything);
- the appraisal's share of the decoded (completion) tokens.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Mapping, Sequence

from bots.llm.token_ledger import shared_prefix

APPRAISAL_KINDS = ("emotion", "relationship")


@dataclass(slots=True)
class KindTokens:
    """Totals over the measured turns for one kind of request (``reply`` or ``appraisal``)."""

    requests: int = 0
    prompt: int = 0
    completion: int = 0
    # Over requests that have a previous one of the same kind in their conversation:
    later_requests: int = 0
    later_prompt: int = 0
    shared_with_previous: int = 0
    shared_with_any_earlier: int = 0

    def per_turn(self, turns: int) -> dict[str, float]:
        later_turns = self.later_requests / max(1, self.requests) * turns
        return {
            "prompt": self.prompt / turns if turns else 0.0,
            "completion": self.completion / turns if turns else 0.0,
            "shared_prefix": self.shared_with_previous / later_turns if later_turns else 0.0,
            "shared_share": self.shared_with_previous / self.later_prompt if self.later_prompt else 0.0,
            "shared_any_earlier_share": self.shared_with_any_earlier / self.later_prompt if self.later_prompt else 0.0,
        }


@dataclass(slots=True)
class TokenReport:
    """Model tokens per turn, averaged over ``turns`` turns in ``conversations`` conversations."""

    conversations: int
    turns: int
    tokenizer: str = ""
    answers: str = ""
    layout: str = ""
    appraiser: str = ""
    reply: dict[str, float] = field(default_factory=dict)
    appraisal: dict[str, float] = field(default_factory=dict)
    appraisal_share_of_decoded: float = 0.0
    requests_per_turn: float = 0.0
    reply_requests: int = 0  # one per turn unless a turn failed or a request was sent again

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def kind_of(entry: Mapping[str, Any]) -> str:
    return "appraisal" if entry["kind"] in APPRAISAL_KINDS else "reply"


def tally(conversations: Iterable[Sequence[Mapping[str, Any]]]) -> dict[str, KindTokens]:
    """Totals per kind over ledger entries grouped by conversation (each in the order sent)."""
    totals = {"reply": KindTokens(), "appraisal": KindTokens()}
    for entries in conversations:
        previous: dict[str, Sequence[int]] = {}
        earlier: list[Sequence[int]] = []
        for entry in entries:
            ids = entry["prompt_ids"]
            kind = totals[kind_of(entry)]
            kind.requests += 1
            kind.prompt += entry["prompt_tokens"]
            kind.completion += entry["completion_tokens"]
            before = previous.get(entry["kind"])  # emotion with emotion, relationship with relationship
            if before is not None:
                kind.later_requests += 1
                kind.later_prompt += entry["prompt_tokens"]
                kind.shared_with_previous += shared_prefix(before, ids)
                kind.shared_with_any_earlier += max(shared_prefix(e, ids) for e in earlier)
            previous[entry["kind"]] = ids
            earlier.append(ids)
    return totals


def report(conversations: Sequence[Sequence[Mapping[str, Any]]], turns: int, **about: str) -> TokenReport:
    """The per-turn figures for ``conversations`` of ``turns`` turns each."""
    totals = tally(conversations)
    all_turns = len(conversations) * turns
    out = TokenReport(len(conversations), turns, **about)
    out.reply = totals["reply"].per_turn(all_turns)
    out.appraisal = totals["appraisal"].per_turn(all_turns)
    decoded = totals["reply"].completion + totals["appraisal"].completion
    out.appraisal_share_of_decoded = totals["appraisal"].completion / decoded if decoded else 0.0
    out.requests_per_turn = (totals["reply"].requests + totals["appraisal"].requests) / all_turns if all_turns else 0.0
    out.reply_requests = totals["reply"].requests
    return out


def table(r: TokenReport) -> str:
    """The report as lines of text."""
    lines = [
        f"model tokens per turn ({r.conversations} conversations x {r.turns} turns; layout {r.layout}; "
        f"appraiser {r.appraiser}; {r.requests_per_turn:.1f} requests per turn)",
        f"  counted with: {r.tokenizer}",
        f"  the double answers: {r.answers}",
        "  | request | prompt | completion | shared prefix with the previous one (later turns) | with any earlier prompt |",
        "  |---|---|---|---|---|",
    ]
    for name, row in (("reply", r.reply), ("appraisal (emotion + relationship)", r.appraisal)):
        if not row or (row["prompt"] == 0 and row["completion"] == 0):
            lines.append(f"  | {name} | 0 | 0 | - | - |")
            continue
        lines.append(
            f"  | {name} | {row['prompt']:.0f} | {row['completion']:.0f} | "
            f"{row['shared_prefix']:.0f} tokens = {row['shared_share']:.0%} | {row['shared_any_earlier_share']:.0%} |"
        )
    lines.append(f"  appraisal share of decoded tokens: {r.appraisal_share_of_decoded:.0%}")
    if r.reply_requests != r.conversations * r.turns:
        lines.append(
            f"  note: {r.reply_requests} reply requests for {r.conversations * r.turns} turns "
            "(a turn failed or a request was sent again): the figures are off by that much"
        )
    return "\n".join(lines)
