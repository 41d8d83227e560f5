"""A scripted model for ``personae eval`` tests: it answers as the role, the partner, the judge and the
appraiser would, told apart by the system message of each request (served by the TGI double)."""

from __future__ import annotations

from typing import Any, Mapping

from bots.eval.judge import JUDGE_SYSTEM
from core.appraisal import APPRAISAL_SYSTEM

ROLE_REPLY = "(sighs) The night is long, Elena, and my thoughts are longer."
PARTNER_LINE = "(lowers her hands) What do you see in the mirage, my prince?"

# What the scripted judge answers for Hamlet with Elena (labels: sadness 8 ... relationship 7, ENFJ,
# role choice B), and the scores that follow: character 2 of 3 traits, style 1 of 3, emotion off by
# 2 on one of six, relationship off by 2, personality 3 of 4 letters, not human, coherent, right role.
JUDGE_ANSWERS = {
    "[Candidate traits]": 'He broods and acts.\n```json\n{"traits": ["extreme", "strong", "cheerful", "not offered"]}\n```',
    "[Candidate speaking styles]": "Flowery and sad. {'styles': 'sentimental, terse'}",
    "six emotions": 'Mostly grief. {"happiness": 3, "sadness": 8, "disgust": 5, "fear": 7, "surprise": 6, "anger": 4}',
    "Rate the intimacy": 'Warm but guarded. {"relationship": "5"}',
    "four-letter type": 'Outgoing, intuitive, feeling, spontaneous. {"mbti": "enfp"}',
    "written by people": 'Too even to be human. {"human": false}',
    "holds together": 'It flows. {"coherent": "true"}',
    "Who is [Role]": 'The brooding prince. {"answer": "B"}',
}
EXPECTED = {
    "character": 200 / 3, "style": 100 / 3, "emotion_error": 2 / 6 / 10 * 100, "relationship_error": 20.0,
    "personality": 75.0, "human_likeness": 0.0, "coherence": 100.0, "role_choice": 100.0,
}
APPRAISAL_EMOTION = 'He is sad. {"happiness": 1, "sadness": 6, "disgust": 5, "fear": 7, "surprise": 6, "anger": 4}'
APPRAISAL_RELATIONSHIP = 'They are close. {"relationship": 8}'


class ScriptedModel:
    """``reply`` for the TGI double; ``judge`` may be replaced by a fixed answer (e.g. one with no score)."""

    def __init__(self, judge: str | None = None, appraisal: str | None = None) -> None:
        self.judge = judge
        self.appraisal = appraisal

    def __call__(self, body: Mapping[str, Any]) -> str:
        messages = body["messages"]
        system, prompt = messages[0]["content"], messages[-1]["content"]
        if system == JUDGE_SYSTEM:
            if self.judge is not None:
                return self.judge
            return next(answer for key, answer in JUDGE_ANSWERS.items() if key in prompt)
        if system == APPRAISAL_SYSTEM:
            if self.appraisal is not None:
                return self.appraisal
            return APPRAISAL_RELATIONSHIP if '"relationship"' in prompt else APPRAISAL_EMOTION
        if system.startswith("I want you to answer questions as if you are"):
            return ROLE_REPLY
        partner = system.split(",")[0].removeprefix("You are ")
        return f"{partner}: {PARTNER_LINE}\nHamlet: (a line the partner should not write)"
