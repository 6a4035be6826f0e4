import pytest

from aicallerd.text.guardrail import (
    SYSTEM_PROMPT,
    ReplyFilter,
    clean_sentence,
)


def test_prompts() -> None:
    lowered = SYSTEM_PROMPT.lower()
    for must in ("phone", "three short sentences", "lists", "markdown", "emojis", "question"):
        assert must in lowered
    assert "ai assistant" in lowered  # never claims to be human


CLEAN_CASES = [
    ("Hello there.", "Hello there."),
    ("  Hello   there.  ", "Hello there."),
    # markdown
    ("**Bold** move.", "Bold move."),
    ("This is *really* good.", "This is really good."),
    ("This is _really_ good.", "This is really good."),
    ("Use __strong__ words.", "Use strong words."),
    ("Type `ls -l` now.", "Type ls -l now."),
    ("```python", ""),
    ("## Opening hours", "Opening hours"),
    ("# Title", "Title"),
    ("> Quoted advice.", "Quoted advice."),
    ("See [our website](https://example.com/x) for more.", "See our website for more."),
    ("![a cat](cat.png) Cute.", "a cat Cute."),
    ("---", ""),
    ("***", ""),
    ("a * b", "a b"),
    ("snake_case_name is fine.", "snake case name is fine."),
    # list markers
    ("- Milk", "Milk"),
    ("* Eggs", "Eggs"),
    ("+ Bread", "Bread"),
    ("• Butter", "Butter"),
    ("1. First, call us.", "First, call us."),
    ("2) Then wait.", "Then wait."),
    ("10. Tenth.", "Tenth."),
    ("- **Note:** it is late.", "Note: it is late."),
    ("**1. Open the door.**", "Open the door."),
    ("J. Smith will call.", "J. Smith will call."),  # an initial is not a list marker
    ("3.5 percent is the rate.", "3.5 percent is the rate."),
    ("-5 degrees outside.", "-5 degrees outside."),
    # emojis and symbols
    ("Great job! 😊", "Great job!"),
    ("👍 Sounds good.", "Sounds good."),
    ("Have fun 🎉🎉!", "Have fun!"),
    ("Thumbs 👍🏽 up.", "Thumbs up."),
    ("Family 👨‍👩‍👧 time.", "Family time."),
    ("Rated ★★★★☆ by users.", "Rated by users."),
    ("Call 1️⃣ now.", "Call 1 now."),
    ("It is 20°C today.", "It is 20 degrees Celsius today."),
    ("About 70 °F.", "About 70 degrees Fahrenheit."),
    ("Turn it 90°.", "Turn it 90 degrees."),
    ("Salt & pepper.", "Salt and pepper."),
    ("Go from A -> B.", "Go from A to B."),
    ("Go from A → B.", "Go from A to B."),
    ("Press # then 5.", "Press then 5."),
    ("Ticket #42 is ready.", "Ticket 42 is ready."),
    ("Math: 2 + 2 = 4.", "Math: 2 + 2 equals 4."),
    ("It costs $5 or €4.", "It costs $5 or €4."),
    ("Café au lait, naïve.", "Café au lait, naïve."),
    ("😊", ""),
    ("...", ""),
    ("- ", ""),
    ("", ""),
    # role prefixes
    ("Assistant: Hello!", "Hello!"),
    ("AI: Sure thing.", "Sure thing."),
    ("**Assistant:** Hi.", "Hi."),
    ("assistant : hi.", "hi."),
    # URLs become their host name
    ("Go to https://www.example.com/path?q=1 today.", "Go to example.com today."),
    ("Visit www.twilio.com.", "Visit twilio.com."),
    ("See http://docs.example.org/a/b, then call.", "See docs.example.org, then call."),
    ("Mail me at bob@example.com.", "Mail me at bob@example.com."),
]


@pytest.mark.parametrize(("raw", "clean"), CLEAN_CASES)
def test_clean_sentence(raw: str, clean: str) -> None:
    assert clean_sentence(raw) == clean


@pytest.mark.parametrize(("raw", "clean"), CLEAN_CASES)
def test_accept_returns_the_clean_text(raw: str, clean: str) -> None:
    f = ReplyFilter()
    assert f.accept(raw) == (clean or None)
    assert f.done is False
    assert f.spoken_text == clean


# (sentences in, what accept returns for each, done at the end, options)
REPLY_CASES: list[tuple[list[str], list[str | None], bool, dict]] = [
    (["Hi.", "How are you?"], ["Hi.", "How are you?"], False, {}),
    # at most max_sentences: done as soon as the last one is accepted
    (["One.", "Two.", "Three.", "Four."], ["One.", "Two.", "Three.", None], True, {}),
    (["One.", "Two."], ["One.", None], True, {"max_sentences": 1}),
    (["One.", "Two."], ["One.", "Two."], True, {"max_sentences": 2}),
    # empty sentences do not count
    (["😊", "One.", "**", "Two.", "Three."], [None, "One.", None, "Two.", "Three."], True, {}),
    # a sentence repeated within the reply stops it
    (["I can help.", "I can help.", "Bye."], ["I can help.", None, None], True, {}),
    (["I can help.", "**I can HELP!**"], ["I can help.", None], True, {}),
    # the model writing the caller's next line stops the reply
    (["Sure.", "User: what now?", "More."], ["Sure.", None, None], True, {}),
    (["Caller: hello"], [None], True, {}),
    # copying the previous reply: drop the copy and stop
    (
        ["I can help you book a table for tonight.", "What time?"],
        [None, None],
        True,
        {"previous_replies": ["I can help you book a table for tonight. What time?"]},
    ),
    (
        ["Sure.", "I can help you book a table for tonight."],
        ["Sure.", None],
        True,
        {"previous_replies": ["Sure. I can help you book a table for tonight. What time works?"]},
    ),
    # a short shared opener is not a copy
    (
        ["Sure.", "The shop opens at nine."],
        ["Sure.", "The shop opens at nine."],
        False,
        {"previous_replies": ["Sure. I can help you book a table for tonight."]},
    ),
    (["Okay."], ["Okay."], False, {"previous_replies": ["Okay."]}),
    # a copy of ANY earlier reply of the call, not only the last one
    (
        ["I can help you book a table for tonight.", "What time?"],
        [None, None],
        True,
        {
            "previous_replies": [
                "I can help you book a table for tonight. What time?",
                "We open at nine.",
                "Anything else I can do for you?",
            ]
        },
    ),
    # same words, different reply: not a copy
    (
        ["I can help you book a table for tomorrow."],
        ["I can help you book a table for tomorrow."],
        False,
        {"previous_replies": ["I can help you book a table for tonight."]},
    ),
    # a copy is judged on words, not on punctuation or markdown
    (
        ["**I can help you** book a table, for tonight!"],
        [None],
        True,
        {"previous_replies": ["I can help you book a table for tonight."]},
    ),
    # "tables" is not "table": whole words only
    (
        ["I can help you book a table"],
        ["I can help you book a table"],
        False,
        {"previous_replies": ["I can help you book a tables now."]},
    ),
]


@pytest.mark.parametrize(("sentences", "results", "done", "options"), REPLY_CASES)
def test_reply_filter(
    sentences: list[str], results: list[str | None], done: bool, options: dict
) -> None:
    f = ReplyFilter(**options)
    assert [f.accept(s) for s in sentences] == results
    assert f.done is done
    assert f.spoken_text == " ".join(r for r in results if r)
    assert f.sentences == [r for r in results if r]


def test_an_opening_shared_with_an_earlier_reply_waits_for_the_rest_of_its_sentence() -> None:
    """SmolLM2 often opens with the same phrase ("I'm sorry for any misunderstanding,"): cut
    ahead of its sentence, that phrase alone looked like a copy, and the whole reply and its
    second try were refused. It is spoken with the rest of its sentence when that differs."""
    earlier = ["I'm sorry for any misunderstanding, but I can't check the weather."]
    f = ReplyFilter(previous_replies=earlier)
    assert f.accept("I'm sorry for any misunderstanding,", whole=False) is None
    assert not f.done and f.refused == []
    said = f.accept("but we are open on Sunday from ten.")
    assert said == "I'm sorry for any misunderstanding, but we are open on Sunday from ten."
    assert f.spoken_text == said and not f.done

    f = ReplyFilter(previous_replies=earlier)  # the rest a copy too: refused, reply over
    assert f.accept("I'm sorry for any misunderstanding,", whole=False) is None
    assert f.accept("but I can't check", whole=False) is None
    assert f.accept("the weather.") is None
    assert f.done and f.spoken_text == ""
    assert f.refused == ["I'm sorry for any misunderstanding, but I can't check the weather."]


def test_a_held_opening_is_spoken_once_the_words_after_it_part_from_the_earlier_reply() -> None:
    earlier = ["I'm sorry for any misunderstanding, but as an AI I cannot check the weather."]
    f = ReplyFilter(previous_replies=earlier)
    assert f.release("but as") is None  # nothing held
    assert f.accept("I'm sorry for any misunderstanding,", whole=False) is None
    assert f.release("") is None
    assert f.release("but as a") is None  # "a" may be the start of "an": not yet apart
    assert f.release("but as a phone") == "I'm sorry for any misunderstanding,"
    assert f.accept("but as a phone service, we open at ten.") == (
        "but as a phone service, we open at ten."
    )
    assert f.spoken_text == (
        "I'm sorry for any misunderstanding, but as a phone service, we open at ten."
    )
    assert not f.done and f.refused == []

    f = ReplyFilter(previous_replies=earlier)  # still the earlier words: held, then refused
    assert f.accept("I'm sorry for any misunderstanding,", whole=False) is None
    assert f.release("but as an AI I cannot ") is None
    assert f.accept("but as an AI I cannot check the weather.") is None
    assert f.done and f.spoken_text == ""


def test_nothing_after_done() -> None:
    f = ReplyFilter(max_sentences=1)
    assert f.accept("One.") == "One."
    assert f.done
    assert f.accept("Two.") is None
    assert f.spoken_text == "One."


def test_an_opening_clause_spoken_ahead_does_not_use_up_a_sentence() -> None:
    """ "Sure," or "We have rooms" spoken before the rest of their sentence leave the reply
    its full number of sentences (the word budget still counts them)."""
    f = ReplyFilter(max_sentences=2)
    assert f.accept("We have rooms", whole=False) == "We have rooms"
    assert f.accept("that look over the sea.") == "that look over the sea."
    assert not f.done
    assert f.accept("Shall I book one?") == "Shall I book one?"
    assert f.done


def test_the_rest_of_a_sentence_whose_opening_was_refused_is_not_spoken_alone() -> None:
    """A boilerplate opening cut ahead of its sentence takes the rest with it: the caller
    must not hear "with written text and translation." out of nowhere."""
    f = ReplyFilter()
    assert f.accept("I'm an AI language model", whole=False) is None
    assert f.accept("with written text and translation.") is None
    assert f.accept("How can I help?") == "How can I help?"
    assert f.spoken_text == "How can I help?"


def test_a_sentence_begun_aloud_is_finished_even_past_the_word_budget() -> None:
    """The budget refuses a whole sentence that would not fit, never the rest of one the
    caller is already hearing."""
    f = ReplyFilter(max_words=10)
    assert f.accept("We have rooms") == "We have rooms"  # whole: 3 words
    assert f.accept("with a view of the sea", whole=False) == "with a view of the sea"
    assert not f.refuses_length(9)  # the rest of that sentence is still wanted
    assert f.accept("and a balcony for two.") == "and a balcony for two."
    assert f.done  # 15 words: nothing more
    assert f.accept("Shall I book one?") is None


def test_a_refused_opening_takes_every_piece_of_its_sentence() -> None:
    f = ReplyFilter()
    assert f.accept("I'm an AI language model", whole=False) is None
    assert f.accept("with many skills", whole=False) is None
    assert f.accept("and no body.") is None
    assert f.accept("How can I help?") == "How can I help?"


def test_the_rest_after_an_as_an_ai_clause_is_the_answer() -> None:
    f = ReplyFilter()
    assert f.accept("As an AI language model,", whole=False) is None
    assert f.accept("I can book that table for you.") == "I can book that table for you."


def test_bad_max_sentences() -> None:
    with pytest.raises(ValueError):
        ReplyFilter(max_sentences=0)


def test_word_budget_stops_a_rambling_reply_after_the_sentence_that_crosses_it():
    f = ReplyFilter(max_sentences=3, max_words=12)
    first = "I am sorry for any confusion but I cannot see the schedule right now."
    assert f.accept(first) == first
    assert f.done
    assert f.accept("Anything else?") is None


def test_a_sentence_that_would_run_past_the_word_budget_is_not_started():
    f = ReplyFilter(max_sentences=3, max_words=30)
    first = "We are open from nine to five on weekdays."
    second = "On Saturdays we open a little later, at ten, and we close at two in the afternoon."
    third = "On Sundays and public holidays the shop stays closed all day long, sorry."
    assert f.accept(first) == first
    assert f.accept(second) == second
    assert f.refuses_length(5)  # the third sentence is refused once it passes 4 words
    assert not f.refuses_length(4)
    assert f.accept(third) is None  # 9 + 17 + 12 words > 30
    assert f.done
    assert len(f.spoken_text.split()) <= 30


@pytest.mark.parametrize(
    ("raw", "spoken"),
    [
        ("As an AI, I can tell you we open at nine.", "I can tell you we open at nine."),
        ("As an AI language model, I don't have feelings.", None),
        ("I'm just an AI.", None),
        ("I am only an AI language model.", None),
        ("I don't have personal opinions, but I can help.", None),
        ("I do not have the ability to browse the internet.", None),
        # the honest answer to "are you a person?" is kept
        ("I am an AI assistant.", "I am an AI assistant."),
        ("Sure, we open at nine.", "Sure, we open at nine."),
    ],
)
def test_chatbot_boilerplate_is_not_spoken(raw, spoken):
    f = ReplyFilter()
    assert f.accept(raw) == spoken
    assert not f.done  # the rest of the reply may still be an answer


def test_boilerplate_after_an_answer_ends_the_reply() -> None:
    """Going on past it would leave the caller in silence while the model writes the next
    sentence: "You're welcome!", 1.5 s of nothing, then more."""
    f = ReplyFilter()
    assert f.accept("You're welcome!") == "You're welcome!"
    assert f.accept("As an AI language model, I don't have feelings.") is None
    assert f.done
    assert f.accept("Anything else?") is None
    assert f.spoken_text == "You're welcome!"


@pytest.mark.parametrize(
    ("raw", "spoken"),
    [
        ("See you tomorrow! (In at most 3 short sentences.)", "See you tomorrow!"),
        (
            "We open at nine (weekdays only) and close at five.",
            "We open at nine and close at five.",
        ),
        ("(Answer naturally in at most 3 short sentences. No lists.)", None),
    ],
)
def test_parenthetical_asides_are_not_spoken(raw, spoken):
    assert ReplyFilter().accept(raw) == spoken
