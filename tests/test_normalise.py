"""Tweet normalisation (embedensemble.normalise) and the head member's ``params.normalise`` flag. Synthetic tweets only."""

from __future__ import annotations

import numpy as np
import pytest

from embedensemble.config import MemberConfig
from embedensemble.errors import ConfigError
from embedensemble.features import EmbeddingFeatures, TfidfFeatures, make_features
from embedensemble.members.base import MemberContext, build_member
from embedensemble.normalise import hashtag_words, normalise_texts, normalise_tweet


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("@sam_99 thanks &amp; see you", "@user thanks & see you"),
        ("look https://t.co/AbC123 and www.example.org/x now", "look http and http now"),
        ("I am sooooo tired", "I am soo tired"),
        ("what?!?!?! no!!!!!!", "what?!?!?! no!!!"),
        ("great game \U0001F602", "great game face with tears of joy"),
        ("miss you \u2764\ufe0f", "miss you red heart"),
        ("fine :) see you <3", "fine smiling face see you red heart"),
        ("meet at 10:30 ok", "meet at 10:30 ok"),
        ("mail me at ann@mail.com", "mail me at ann@mail.com"),
        ("#NeverGiveUp today", "never give up today"),
        ("#nevergiveup", "never give up"),
        ("#lol ok", "lol ok"),
        ("#2017Goals", "2017 goals"),
        ("  spaced \n out  ", "spaced out"),
    ],
)
def test_normalise_tweet_rules(raw: str, expected: str) -> None:
    assert normalise_tweet(raw) == expected


def test_normalise_is_idempotent_and_keeps_order() -> None:
    tweets = ["@a #HappyMonday \U0001F60D sooo good", "nothing to change here", "&lt;3 you #blessed"]
    once = normalise_texts(tweets)
    assert normalise_texts(once) == once
    assert len(once) == 3 and once[1] == "nothing to change here"


def test_hashtag_words_splits_camel_case_and_digits() -> None:
    assert hashtag_words("WorldCup2018") == "world cup 2018"
    assert hashtag_words("NASA") == "nasa"


def test_non_text_is_refused() -> None:
    with pytest.raises(TypeError, match="str"):
        normalise_tweet(None)  # type: ignore[arg-type]


def test_tfidf_features_read_normalised_text_and_keep_the_flag_on_load(tmp_path) -> None:
    texts = ["so happy \U0001F602 #GoodDay", "angry @bob at https://x.co/1", "sad \U0001F622 #BadDay", "happy #gooday again"]
    features = TfidfFeatures(min_df=1, normalise=True).fit(texts)
    words = set(features.vectorizers_["word"].vocabulary_)
    assert {"tears", "good", "day", "user", "http"} <= words
    assert "bob" not in words
    features.save(tmp_path / "f")
    loaded = TfidfFeatures.load(tmp_path / "f")
    assert loaded.normalise is True
    assert (loaded.transform(texts) != features.transform(texts)).nnz == 0
    raw = TfidfFeatures(min_df=1).fit(texts)
    assert "tears" not in raw.vectorizers_["word"].vocabulary_


def test_embedding_features_embed_the_normalised_view() -> None:
    seen: list[list[str]] = []

    class Recording(EmbeddingFeatures):
        def _embed(self, texts: list[str]) -> np.ndarray:
            seen.append(texts)
            return np.zeros((len(texts), 2), dtype=np.float32)

    Recording("fake", normalise=True).transform(["@amy I am sooooo glad \U0001F602"])
    Recording("fake").transform(["@amy hi"])
    assert seen == [["@user I am soo glad face with tears of joy"], ["@amy hi"]]


def test_member_flag_reaches_the_features_and_bad_values_are_refused() -> None:
    context = MemberContext(seed=0)
    member = build_member(MemberConfig(name="t", features="tfidf", params={"normalise": True}), context)
    assert member.features_.normalise is True
    assert build_member(MemberConfig(name="t", features="tfidf"), context).features_.normalise is False
    with pytest.raises(ConfigError, match="normalise"):
        build_member(MemberConfig(name="t", features="tfidf", params={"normalise": "yes"}), context)
    with pytest.raises(ConfigError, match="normalise"):
        make_features("tfidf", None, normalise=1)  # type: ignore[arg-type]
