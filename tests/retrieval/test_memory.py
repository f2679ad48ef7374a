"""The translation memory: BM25 over training sources, joined with their targets, never leaking a sentence's own translation."""

import pytest

from ragtune.errors import RagtuneError
from ragtune.retrieval.memory import TranslationMemory

SOURCES = ["A man in a blue shirt is running.", "A man in a red shirt is running.", "Two dogs play in the snow.",
           "A girl climbs a wooden playhouse.", "两只狗在雪地里玩。", "A woman reads a book in the park."]
TARGETS = ["Ein Mann in einem blauen Hemd rennt.", "Ein Mann in einem roten Hemd rennt.", "Zwei Hunde spielen im Schnee.",
           "Ein Mädchen klettert in ein Spielhaus aus Holz.", "Zwei Hunde spielen im Schnee.", "Eine Frau liest im Park ein Buch."]


@pytest.fixture(scope="module")
def tm():
    return TranslationMemory(SOURCES, TARGETS)


def test_retrieves_the_most_similar_pair_with_its_translation(tm):
    (hits,) = tm.search(["A man in a green shirt is running."], k=2)
    assert {row for row, _ in hits} == {0, 1} and hits[0][1] >= hits[1][1] > 0
    (text,) = tm.augment(["A man in a green shirt is running."], k=1)
    row = hits[0][0]
    assert text == f"A man in a green shirt is running. <tm> {SOURCES[row]} = {TARGETS[row]}"


def test_training_sentences_never_read_their_own_translation(tm):
    augmented = tm.augment_training(k=2)
    assert len(augmented) == len(SOURCES)
    for source, target, text in zip(SOURCES, TARGETS, augmented):
        memory = text[len(source):]
        assert f"{source} = " not in memory
    first = tm.search([SOURCES[0]], k=1, exclude_self=True)[0]
    assert first[0][0] == 1  # the red-shirt sentence, not itself
    assert tm.search([SOURCES[0]], k=1)[0][0][0] == 0  # without exclusion it finds itself


def test_chinese_sources_are_segmented(tm):
    (hits,) = tm.search(["雪地里的狗"], k=1)
    assert hits and hits[0][0] == 4


def test_no_shared_word_gives_the_sentence_alone(tm):
    assert tm.augment(["xyzzy"], k=3) == ["xyzzy"]


def test_errors():
    with pytest.raises(RagtuneError, match="3 sources but 2 targets"):
        TranslationMemory(["a", "b", "c"], ["x", "y"])
    with pytest.raises(RagtuneError, match="no sentence pairs"):
        TranslationMemory([], [])
    tm = TranslationMemory(["a dog"], ["ein Hund"], max_chars=3)
    with pytest.raises(RagtuneError, match="k must be a positive integer"):
        tm.search(["dog"], k=0)
    assert tm.augment(["dog"], k=5) == ["dog <tm> a d = ein"]  # k capped by the memory; hits cut to max_chars
