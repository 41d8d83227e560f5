"""Answers of realistic length for ``personae bench`` (the double answers with them: ``--bench-answers``).

- A reply: one of a few in-character replies of about 30-60 tokens, taken in turn.
- An appraisal (the BeyondDialogue alignment tasks): the trained shape, a few sentences of analysis
  and then the JSON object (``AlignmentAnswers`` with the readable shapes, integer and fractional
  scores), about 300 tokens in all: the median length of GPT-4o's analyses of the same tasks in
  AutoRPEval (issue 12), which is what BD's alignment data looks like.
"""

from __future__ import annotations

import itertools
import threading
from typing import Any, Callable, Mapping

from bots.llm.alignment_answers import AlignmentAnswers

REPLIES = (
    "(glances at the window) The rain has stopped at last, and the road home is clear. I would not trust"
    " the sky for long, though; the clouds over the hills are still heavy, and the wind has turned cold.",
    "(folds the map and sets it aside) Clear for now. The morning was grey and wet, but the afternoon"
    " should hold. If you mean to walk to the village, go before dusk; the path floods near the mill.",
    "(pours two cups of tea) A fine drizzle, nothing more. The farmers will be glad of it after so dry a"
    " month. Sit a while and tell me what brings you out on a day like this one.",
    "(listens to the gutters) Heavy rain, and more to come by the sound of it. I have seen worse storms"
    " in this valley, but not many. Stay by the fire until it passes; there is no hurry.",
)

ANALYSIS = (
    "{name} answers the questions about the weather calmly and in few words, which fits a steady and"
    " reserved character who prefers facts to feelings. The role does not rush to share personal thoughts,"
    " yet the small gestures, such as glancing at the window, folding the map or pouring tea, suggest a"
    " quiet attentiveness to the other person and a wish to look after them. There is a mild warmth in the"
    " invitation to sit and talk, so happiness is present but restrained rather than openly expressed."
    " The repeated warnings about floods, cold wind and the coming storm show some concern for the other"
    " person's safety, which points to a low level of fear, directed at what might happen to them rather"
    " than at the role's own situation. Nothing in the dialogue shows disgust or anger: the tone stays"
    " polite and patient even when the same question is asked again and again. There is little surprise,"
    " since the role treats the changing weather as ordinary and expected in this valley. Sadness is"
    " faint, perhaps a touch of melancholy in the grey and wet description, but it does not colour the"
    " conversation. Overall the emotional display is calm, caring and controlled, with happiness and fear"
    " at modest levels and the other emotions close to absent."
)

def replies() -> Callable[[Mapping[str, Any]], str]:
    """A reply function for the double: ``REPLIES`` in turn, whatever the request."""
    order = itertools.cycle(REPLIES)
    lock = threading.Lock()

    def reply(body: Mapping[str, Any]) -> str:
        with lock:
            return next(order)

    return reply


def alignment() -> AlignmentAnswers:
    """Appraisal answers in the trained shape (analysis, then the object), every one readable."""
    return AlignmentAnswers(("analysis", "float"), analysis=ANALYSIS)


DESCRIPTION = (
    "replies of about 30-60 tokens (4 in-character lines in turn); appraisals as trained: "
    "a paragraph of analysis, then the JSON object (integer or fractional scores), about 300 tokens"
)
