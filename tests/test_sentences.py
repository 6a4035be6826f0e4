import random

import pytest

from aicallerd.text.sentences import SentenceSplitter

# (text, expected pieces, splitter options)
CASES: list[tuple[str, list[str], dict[str, int]]] = [
    ("Hello there. How are you?", ["Hello there.", "How are you?"], {}),
    ("Great! Thanks? Sure.", ["Great!", "Thanks?", "Sure."], {}),
    ("Really?! Yes.", ["Really?!", "Yes."], {}),
    ("No trailing punctuation", ["No trailing punctuation"], {}),
    ("", [], {}),
    ("   ", [], {}),
    # decimals, times, versions, amounts: no space after the period
    ("It costs 3.5 dollars. Okay?", ["It costs 3.5 dollars.", "Okay?"], {}),
    ("Meet at 10.30 tomorrow. Bye.", ["Meet at 10.30 tomorrow.", "Bye."], {}),
    ("That is $1,234.56 in total. Fine.", ["That is $1,234.56 in total.", "Fine."], {}),
    ("Use version 2.0.1 now. Done.", ["Use version 2.0.1 now.", "Done."], {}),
    ("Visit example.com today. Thanks.", ["Visit example.com today.", "Thanks."], {}),
    # abbreviations
    ("Mr. Smith is here. He waits.", ["Mr. Smith is here.", "He waits."], {}),
    ("Mrs. Jones and Dr. Who came. Yes.", ["Mrs. Jones and Dr. Who came.", "Yes."], {}),
    ("I live on Baker St. It is nice.", ["I live on Baker St. It is nice."], {}),
    ("Bring fruit, e.g. apples. Thanks.", ["Bring fruit, e.g. apples.", "Thanks."], {}),
    ("Bring fruit, e.g. Apples. Thanks.", ["Bring fruit, e.g. Apples.", "Thanks."], {}),
    ("That is, i.e. the rest. Ok.", ["That is, i.e. the rest.", "Ok."], {}),
    ("Cats vs. dogs. Who wins?", ["Cats vs. dogs.", "Who wins?"], {}),
    ("Apples, pears, etc. and more. Ok.", ["Apples, pears, etc. and more.", "Ok."], {}),
    ("Apples, pears, etc. Then more.", ["Apples, pears, etc.", "Then more."], {}),
    ("Open at 9 a.m. tomorrow. Bye.", ["Open at 9 a.m. tomorrow.", "Bye."], {}),
    ("It opens at 9 a.m. See you.", ["It opens at 9 a.m.", "See you."], {}),
    ("Closes at 5 p.m. on Friday.", ["Closes at 5 p.m. on Friday."], {}),
    ("The U.S. economy grew. Yes.", ["The U.S. economy grew.", "Yes."], {}),
    ("I moved to the U.S. Then I stayed.", ["I moved to the U.S.", "Then I stayed."], {}),
    ("Prices rose approx. ten percent. Ok.", ["Prices rose approx. ten percent.", "Ok."], {}),
    ("Call on Jan. 5 please. Ok.", ["Call on Jan. 5 please.", "Ok."], {}),
    # initials
    ("J. Smith called. Call back.", ["J. Smith called.", "Call back."], {}),
    ("J. R. R. Tolkien wrote it. Yes.", ["J. R. R. Tolkien wrote it.", "Yes."], {}),
    ("Neither do I. Then what?", ["Neither do I.", "Then what?"], {}),
    # ellipses always split, mid-sentence too
    ("Well... let me think. Okay.", ["Well...", "let me think.", "Okay."], {}),
    ("Hmm… maybe. Yes.", ["Hmm…", "maybe.", "Yes."], {}),
    ("Wait... What?", ["Wait...", "What?"], {}),
    # closing quotes and brackets stay with their sentence
    ('He said "hi." Then left.', ['He said "hi."', "Then left."], {}),
    ("It is done (mostly.) Next one.", ["It is done (mostly.)", "Next one."], {}),
    ("“Really?” she asked. Yes.", ["“Really?”", "she asked.", "Yes."], {}),
    ("**Note.** Read it.", ["**Note.**", "Read it."], {}),
    # a lowercase word after a period: an unknown abbreviation, not an end
    ("Call Ext. five please. Ok.", ["Call Ext. five please.", "Ok."], {}),
    # no space, no split; never mid-word
    ("Hello.World is a word.", ["Hello.World is a word."], {}),
    ("Hello!World", ["Hello!World"], {}),
    # newlines: lists and paragraphs
    (
        "Here you go:\n1. Milk\n2. Eggs\n- Bread",
        ["Here you go:", "1. Milk", "2. Eggs", "- Bread"],
        {},
    ),
    ("First line\n\n\nSecond line.", ["First line", "Second line."], {}),
    ("Done.\nNext.", ["Done.", "Next."], {}),
    ("1. Buy milk. 2. Buy eggs.", ["1. Buy milk.", "2. Buy eggs."], {}),
    ("Dr.\nWho", ["Dr.", "Who"], {}),
    # whitespace is collapsed
    ("  Lots   of\tspace.   Here.  ", ["Lots of space.", "Here."], {}),
    # pieces without words join the next one
    ("... Hello. !!! Bye.", ["... Hello.", "!!! Bye."], {}),
    # min_chars: short pieces join the next
    ("Hi. How are you? Good.", ["Hi. How are you?", "Good."], {"min_chars": 10}),
    ("Yes.\nNo.\nMaybe so, friend.", ["Yes. No. Maybe so, friend."], {"min_chars": 10}),
    ("Ok.", ["Ok."], {"min_chars": 10}),
    # first clause: only a short opener, only the first piece
    ("Sure, I can help. Bye, ok.", ["Sure,", "I can help.", "Bye, ok."], {"first_clause_chars": 9}),
    ("Okay so, here it is.", ["Okay so,", "here it is."], {"first_clause_chars": 12}),
    ("Oh yes sure, fine.", ["Oh yes sure,", "fine."], {"first_clause_chars": 12}),
    ("One two three four, five.", ["One two three four, five."], {"first_clause_chars": 30}),
    ("Absolutely wonderful, yes.", ["Absolutely wonderful, yes."], {"first_clause_chars": 12}),
    ("Well: here it is.", ["Well:", "here it is."], {"first_clause_chars": 12}),
    ("Right; go on.", ["Right;", "go on."], {"first_clause_chars": 12}),
    ("Okay — so now what?", ["Okay,", "so now what?"], {"first_clause_chars": 12}),
    ("Okay - so now what?", ["Okay,", "so now what?"], {"first_clause_chars": 12}),
    ("A well-known fact, yes.", ["A well-known fact,", "yes."], {"first_clause_chars": 20}),
    ("Okay—so now.", ["Okay—so now."], {"first_clause_chars": 12}),
    ("It has 1,000 items, ok.", ["It has 1,000 items, ok."], {"first_clause_chars": 12}),
    ("1, 2, 3, go.", ["1, 2, 3, go."], {"first_clause_chars": 12}),
    ("At 10:30, we meet.", ["At 10:30,", "we meet."], {"first_clause_chars": 12}),
    ("Sure, I can help.", ["Sure, I can help."], {}),
    ("Sure,", ["Sure,"], {"first_clause_chars": 12}),
    ("Sure, I can.", ["Sure,", "I can."], {"first_clause_chars": 12, "min_chars": 20}),
]  # fmt: skip


def feed_in_chunks(text: str, cuts: list[int], **options: int) -> list[str]:
    splitter = SentenceSplitter(**options)
    out: list[str] = []
    start = 0
    for cut in [*cuts, len(text)]:
        out += splitter.feed(text[start:cut])
        start = cut
    return out + splitter.flush()


@pytest.mark.parametrize(("text", "expected", "options"), CASES)
def test_whole_text(text: str, expected: list[str], options: dict[str, int]) -> None:
    assert feed_in_chunks(text, [], **options) == expected


@pytest.mark.parametrize(("text", "expected", "options"), CASES)
def test_char_by_char(text: str, expected: list[str], options: dict[str, int]) -> None:
    assert feed_in_chunks(text, list(range(1, len(text))), **options) == expected


@pytest.mark.parametrize(("text", "expected", "options"), CASES)
def test_random_chunks(text: str, expected: list[str], options: dict[str, int]) -> None:
    rng = random.Random(text)
    for _ in range(30):
        k = rng.randint(0, max(0, len(text) - 1))
        cuts = sorted(rng.sample(range(1, len(text)), k)) if len(text) > 1 else []
        assert feed_in_chunks(text, cuts, **options) == expected, cuts


def test_emits_as_soon_as_the_boundary_is_confirmed() -> None:
    s = SentenceSplitter()
    assert s.feed("Hello there.") == []
    assert s.feed(" ") == []  # could still be "Dr. Smith"-like: wait for the next word
    assert s.feed("How") == ["Hello there."]
    assert s.feed(" are you?") == []
    assert s.feed("\n") == ["How are you?"]  # a newline confirms on its own
    assert s.flush() == []


def test_llm_style_tokens() -> None:
    tokens = ["Sure", "!", " The", " store", " opens", " at", " 9", " a", ".m", ".", " Bye", "."]
    s = SentenceSplitter()
    got = [s.feed(t) for t in tokens]
    assert got == [[], [], ["Sure!"], [], [], [], [], [], [], [], ["The store opens at 9 a.m."], []]
    assert s.flush() == ["Bye."]


def test_first_clause_latency() -> None:
    s = SentenceSplitter(first_clause_chars=12)
    assert s.feed("Sure,") == []
    assert s.feed(" I") == ["Sure,"]
    assert s.feed(" can, yes, help.") == []
    assert s.flush() == ["I can, yes, help."]


def test_flush_resets_for_the_next_reply() -> None:
    s = SentenceSplitter(first_clause_chars=12)
    assert s.feed("Okay, one. Two") == ["Okay,", "one."]
    assert s.flush() == ["Two"]
    assert s.feed("Sure, three. ") == ["Sure,"]
    assert s.feed("X") == ["three."]
    assert s.flush() == ["X"]
    assert s.flush() == []


def test_long_stream_is_linear_enough() -> None:
    text = "This is a sentence with 3.5 things, e.g. apples. " * 400
    s = SentenceSplitter()
    out: list[str] = []
    for ch in text:
        out += s.feed(ch)
    out += s.flush()
    assert len(out) == 400
    assert set(out) == {"This is a sentence with 3.5 things, e.g. apples."}


FRAGMENTS = [
    "Hello", " there", ".", " ", "  ", "\n", "!", "?", "...", "…", ",", ":", ";", " —", " -",
    "Dr", "e.g", "a.m", "U.S", "J", "3", ".5", "etc", '"', ")", "**", "ok", " Yes", " no",
    "1", "\t", "Sure", " I", "x", " and", " that", " is",
]  # fmt: skip


def squash(text: str) -> str:
    return "".join(ch for ch in text if not ch.isspace() and ch not in ",—-")


@pytest.mark.parametrize("seed", range(40))
@pytest.mark.parametrize(
    "options", [{}, {"min_chars": 8}, {"first_clause_chars": 10}, {"first_phrase_words": 2}]
)
def test_chunking_never_changes_the_result(seed: int, options: dict[str, int]) -> None:
    rng = random.Random(seed)
    text = "".join(rng.choice(FRAGMENTS) for _ in range(rng.randint(1, 60)))
    whole = feed_in_chunks(text, [], **options)
    # nothing lost, nothing added (an opener's dash becomes a comma)
    assert squash("".join(whole)) == squash(text)
    for _ in range(10):
        cuts = sorted(rng.sample(range(1, len(text)), rng.randint(0, len(text) - 1)))
        assert feed_in_chunks(text, cuts, **options) == whole, (text, cuts)


def test_a_long_first_clause_is_spoken_before_its_sentence_ends():
    s = SentenceSplitter(long_clause_chars=30)
    text = "I'm sorry for any confusion about our hours, but we open at nine. See you then."
    out = [piece for ch in text for piece in s.feed(ch)] + s.flush()
    assert out == [
        "I'm sorry for any confusion about our hours,",
        "but we open at nine.",
        "See you then.",
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "We have plenty of destinations in the world that offer views. Call us.",
            ["We have plenty of destinations", "in the world that offer views.", "Call us."],
        ),
        (  # before a prepositional phrase too
            "I'm here to assist you in any way I can!",
            ["I'm here to assist you", "in any way I can!"],
        ),
        ("The rooms we have are in the old town.", ["The rooms we have are in the old town."]),
        (  # only the first piece, and only once
            "Yes. We have rooms and suites and a pool that is open.",
            ["Yes.", "We have rooms and suites and a pool that is open."],
        ),
        (  # never inside a phrase, never after a word that needs what follows
            "We are open from nine to five. The point is that it works.",
            ["We are open from nine to five.", "The point is that it works."],
        ),
        ("The best way to go is that one.", ["The best way to go is that one."]),
        (  # before a modal after a long subject, never after a pronoun
            "The best way to start learning a new language can be overwhelming!",
            ["The best way to start learning a new language", "can be overwhelming!"],
        ),
        ("Most of the rooms we have will be free.", ["Most of the rooms we have", "will be free."]),
        ("My friend at the desk says it will rain.", ["My friend at the desk says it will rain."]),
        ("Sure and that is it.", ["Sure and that is it."]),  # too few words before
        (  # punctuation first: the clause rule has it
            "I'm sorry for the confusion, and we open at nine.",
            ["I'm sorry for the confusion,", "and we open at nine."],
        ),
    ],
)
def test_a_long_first_sentence_is_cut_before_a_clause_so_its_voice_starts_sooner(
    text: str, expected: list[str]
) -> None:
    s = SentenceSplitter(first_clause_chars=12, long_clause_chars=20, first_phrase_words=4)
    out = [piece for ch in text for piece in s.feed(ch)] + s.flush()
    assert out == expected
    assert out == feed_in_chunks(text, [], first_phrase_words=4, long_clause_chars=20)


def test_after_a_lone_interjection_the_sentence_behind_it_is_cut_early_too() -> None:
    """ "Sorry," lasts 0.4 s: a long sentence behind it, written and voiced whole, would
    leave a gap after it."""
    text = "Sorry, but as a travel agent I can help you with flights and hotels. Call us."
    options = {"first_clause_chars": 20, "long_clause_chars": 20, "first_phrase_words": 4}
    expected = [
        "Sorry,",
        "but as a travel agent I can help you",
        "with flights and hotels.",
        "Call us.",
    ]
    assert feed_in_chunks(text, [], **options) == expected
    splitter = SentenceSplitter(**options)
    pieces = [p for ch in text for p in splitter.feed(ch)]
    assert pieces == expected[:3]
    assert [getattr(p, "partial", False) for p in pieces] == [True, True, False]


def test_the_rest_of_a_long_first_sentence_is_cut_too_but_later_sentences_are_not() -> None:
    """Under load the LLM writes the rest of a long first sentence slower than its opening
    phrase is spoken; later sentences are written while the earlier ones play."""
    text = (
        "You can find hotels in the city center that are within walking distance of the "
        "mountain and can take fifteen guests. Rooms in the city that are close to the lake "
        "and the park are cheaper."
    )
    options = {"first_phrase_words": 4, "later_phrase_words": 8, "long_clause_chars": 20}
    pieces = feed_in_chunks(text, [], **options)
    assert pieces == [
        "You can find hotels",
        "in the city center that are within walking distance of the mountain",
        "and can take fifteen guests.",
        "Rooms in the city that are close to the lake and the park are cheaper.",
    ]
    assert [getattr(p, "partial", False) for p in pieces] == [True, True, False, False]
    assert pieces == feed_in_chunks(text, list(range(1, len(text))), **options)


def test_short_clauses_and_numbers_are_not_cut():
    s = SentenceSplitter(long_clause_chars=30)
    text = "Yes, it costs 1,500 dollars, which includes tax. Okay?"
    out = [piece for ch in text for piece in s.feed(ch)] + s.flush()
    assert out == ["Yes, it costs 1,500 dollars, which includes tax.", "Okay?"]
