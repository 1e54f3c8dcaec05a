"""Tweet normalisation: a text view for feature sources (``params: {"normalise": true}`` on a head member;
fine-tuned members do not read the flag yet). Measured on train OOF in docs/ablation.md.

:func:`normalise_tweet` rewrites what tokenizers trained on other text handle badly:

* HTML entities (``&amp;`` -> ``&``), as tweets were often stored escaped;
* URLs -> ``http`` and @mentions -> ``@user`` (the placeholders Twitter-trained encoders use);
* emoji -> their English names (a face with tears of joy becomes ``face with tears of joy``) and a
  few ASCII emoticons -> words; most encoders map emoji to an unknown token;
* hashtags -> their words: camel case is split (``#NeverGiveUp`` -> ``never give up``), a
  lower-case run is segmented with a unigram model (``#nevergiveup`` -> ``never give up``);
* elongations -> two letters (``sooooo`` -> ``soo``), repeated punctuation -> three marks.

Needs the ``emoji`` and ``wordsegment`` packages (core dependencies, since the default config uses it); both
are required rather than used when present, so one config always gives the same features.
``NORMALISE_VERSION`` names the rules: change it when the output of any rule changes.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable
from functools import lru_cache

from .errors import ConfigError

NORMALISE_VERSION = "1"
URL_PLACEHOLDER = "http"
MENTION_PLACEHOLDER = "@user"

_URL = re.compile(r"(?:https?://|www\.)\S+", re.IGNORECASE)
_MENTION = re.compile(r"(?<![\w@])@\w+")
_HASHTAG = re.compile(r"(?<![\w#])#(\w+)")
_ELONGATED = re.compile(r"([^\W\d_])\1{2,}")
_REPEATED_PUNCT = re.compile(r"([!?.])\1{3,}")
_CAMEL_PARTS = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|\d+")
_SPACES = re.compile(r"\s+")
# ASCII emoticons, matched only between spaces (or at the ends) so times like "10:30" stay intact.
_EMOTICONS = {
    ":)": "smiling face", ":-)": "smiling face", ":d": "grinning face", ":-d": "grinning face", "xd": "laughing face",
    ";)": "winking face", ";-)": "winking face", ":(": "sad face", ":-(": "sad face", ":'(": "crying face",
    ":p": "face with tongue", ":-p": "face with tongue", ":o": "surprised face", ":/": "confused face",
    "<3": "red heart", "</3": "broken heart",
}
# Hashtags shorter than this are kept as one word: segmenting "#lol" or "#omg" only hurts.
_MIN_SEGMENT_LENGTH = 6


def _require(module: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigError(
            f"tweet normalisation needs the '{module}' package: pip install {module} (a dependency of embedensemble)"
        ) from None


@lru_cache(maxsize=1)
def _segmenter():
    wordsegment = _require("wordsegment")
    wordsegment.load()  # reads its unigram/bigram counts once (about a second)
    return wordsegment


@lru_cache(maxsize=65536)
def hashtag_words(tag: str) -> str:
    """The words of a hashtag's body (no ``#``), lower case, space separated."""
    parts = _CAMEL_PARTS.findall(tag)
    if not parts:  # only underscores or non-Latin letters: keep it as written
        return tag.replace("_", " ").lower()
    words = []
    for part in parts:
        if part.islower() and len(part) >= _MIN_SEGMENT_LENGTH:
            words.extend(_segmenter().segment(part))
        else:
            words.append(part.lower())
    return " ".join(words)


def _emoji_to_words(text: str) -> str:
    emoji = _require("emoji")

    def name(chars: str, data: dict) -> str:
        return " " + data["en"].strip(":").replace("_", " ").lower() + " "

    return emoji.replace_emoji(text, replace=name)


def _emoticons_to_words(text: str) -> str:
    return " ".join(_EMOTICONS.get(token.lower(), token) for token in text.split(" "))


def normalise_tweet(text: str) -> str:
    """One tweet, normalised by every rule in the module docstring."""
    if not isinstance(text, str):
        raise TypeError(f"normalise_tweet expects a str, got {type(text).__name__}")
    text = html.unescape(text)
    text = _URL.sub(URL_PLACEHOLDER, text)
    text = _MENTION.sub(MENTION_PLACEHOLDER, text)
    text = _HASHTAG.sub(lambda m: hashtag_words(m.group(1)), text)
    text = _emoji_to_words(text)
    text = _SPACES.sub(" ", text).strip()
    text = _emoticons_to_words(text)
    text = _ELONGATED.sub(r"\1\1", text)
    text = _REPEATED_PUNCT.sub(r"\1\1\1", text)
    return text


def normalise_texts(texts: Iterable[str]) -> list[str]:
    """:func:`normalise_tweet` of every text, in order."""
    return [normalise_tweet(t) for t in texts]
