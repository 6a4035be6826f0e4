"""The phone classifiers: goodbyes, "hold on", and whether the words at a pause are finished."""

from __future__ import annotations

import pytest

from aicallerd.text.phone import TurnEnd, end_of_turn, is_closing, is_hold_request

CLOSINGS = [
    # (caller's whole turn, the call is over)
    ("Okay, thank you very much. Goodbye.", True),
    ("bye bye", True),
    ("Bye-bye.", True),
    ("That's all, thanks, bye.", True),
    ("Have a nice day.", True),
    ("Thanks so much, have a great weekend!", True),
    ("Okay, I'll call back tomorrow. Bye.", True),
    ("Goodbye, have a nice day.", True),
    ("Alright, talk to you later.", True),
    ("Take care.", True),
    # a "bye" that goes on is not a goodbye
    ("Bye the way, what are your hours?", False),
    ("Say bye to mom and then tell me when you open.", False),
    ("Goodbye. Actually, wait, one more question: do you deliver?", False),
    ("How do I say goodbye in French?", False),
    ("Bye, and can you also send me the address?", False),
    # thanks alone is not the end of a call
    ("Thank you.", False),
    ("Okay.", False),
    ("", False),
]


@pytest.mark.parametrize(("text", "closing"), CLOSINGS)
def test_a_turn_that_ends_with_a_goodbye_ends_the_call(text: str, closing: bool) -> None:
    assert is_closing(text) is closing


@pytest.mark.parametrize(
    ("text", "closing"),
    [
        ("You're welcome. Goodbye!", True),
        ("Thanks for calling, bye now.", True),
        # small models end ordinary answers with these: not a reason to hang up on the caller
        ("We open at nine. Have a great day!", False),
        ("Sure, take care.", False),
        ("We open at nine.", False),
    ],
)
def test_the_agents_goodbye_must_be_explicit(text: str, closing: bool) -> None:
    assert is_closing(text, strong_only=True) is closing


@pytest.mark.parametrize(
    ("text", "hold"),
    [
        ("Hold on.", True),
        ("One moment please.", True),
        ("Give me a second.", True),
        ("Hang on, let me check.", True),
        ("Just a sec.", True),
        ("Can you hold on to my booking for tomorrow evening at seven?", False),
        ("What time do you open?", False),
    ],
)
def test_hold_requests(text: str, hold: bool) -> None:
    assert is_hold_request(text) is hold


TURN_ENDS = [
    # complete: answer soon
    ("What time do you open tomorrow?", TurnEnd.COMPLETE),
    ("I'd like to book a table for two.", TurnEnd.COMPLETE),
    ("Two.", TurnEnd.COMPLETE),
    ("Can we meet at 5?", TurnEnd.COMPLETE),
    ("Hello.", TurnEnd.COMPLETE),
    # unfinished: a number being read out (Whisper closes it with a full stop anyway)
    ("My number is 555.", TurnEnd.UNFINISHED),
    ("My number is 5 5 5, 1 2.", TurnEnd.UNFINISHED),
    ("It's 0 7 7 0.", TurnEnd.UNFINISHED),
    ("five five five", TurnEnd.UNFINISHED),
    ("My number is", TurnEnd.UNFINISHED),
    ("My number is time time time.", TurnEnd.UNFINISHED),  # Whisper's "five five five"
    ("My number is 555 1234.", TurnEnd.UNFINISHED),  # digits at the end: may go on
    ("My number is 555 1234, please call me back.", TurnEnd.COMPLETE),
    # a name being spelled
    ("It's spelled S, M, I.", TurnEnd.UNFINISHED),
    ("S-M-I-T-H.", TurnEnd.UNFINISHED),
    ("My name is Smith, spelled S.", TurnEnd.UNFINISHED),
    ("My surname is no.", TurnEnd.UNFINISHED),  # Whisper's "Nowak", spelling to follow
    ("My name is Anna Smith.", TurnEnd.UNFINISHED),
    ("My name is Anna and I'd like to book a table.", TurnEnd.COMPLETE),
    ("The code is 7.", TurnEnd.UNFINISHED),
    ("The code is 7 9 2 4 5 1 3, thanks.", TurnEnd.COMPLETE),
    # a sentence that goes on
    ("I want to book a table and", TurnEnd.UNFINISHED),
    ("I want to book a table or", TurnEnd.UNFINISHED),
    ("I'd like to come, but", TurnEnd.UNFINISHED),
    ("So what I need is,", TurnEnd.UNFINISHED),
    ("I was wondering...", TurnEnd.UNFINISHED),
    ("Um.", TurnEnd.UNFINISHED),
    # the words say neither: keep the fixed pause
    ("", TurnEnd.UNKNOWN),
    ("yes I", TurnEnd.UNKNOWN),
]


@pytest.mark.parametrize(("text", "kind"), TURN_ENDS)
def test_end_of_turn_from_the_words_at_a_pause(text: str, kind: TurnEnd) -> None:
    assert end_of_turn(text) is kind
