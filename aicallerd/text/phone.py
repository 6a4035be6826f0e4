"""What a caller's (or the agent's) words mean for the call itself (sans-I/O).

Three small classifiers on a transcript, each a table of phrases rather than a model, so
that a test can list the cases and an operator can read why the call did what it did:

- :func:`is_closing`: the turn *ends* with a goodbye ("Okay, thanks. Bye bye."), so the
  call is over. Only the last clause counts, so a "bye" in a sentence that goes on ("bye
  the way...", "say bye to mom and then...") never ends a call.
- :func:`is_hold_request`: "hold on", "one moment": the caller needs time, not an answer.
- :func:`end_of_turn`: the words at a pause look finished (a question, a sentence) or
  clearly not (a number being read out, a trailing "and", a trailing comma), so the
  endpointer can answer sooner or wait longer.
"""

from __future__ import annotations

import re
from enum import Enum

_CLAUSE = re.compile(r"[^,.;:!?]+")
_TOKEN = re.compile(r"[a-z0-9']+")

# A closing clause: optional thanks/fillers, the goodbye itself, optional trailing courtesy.
_LEAD = (
    r"(?:ok(?:ay)?|alright|all right|well|so|then|great|perfect|cheers|"
    r"thanks?(?: (?:a lot|so much|very much|again))?|thank you(?: (?:very|so) much)?(?: again)?|"
    r"that'?s (?:all|it|everything)(?: (?:for (?:now|today)|i need(?:ed)?))?)"
)
_STRONG = r"(?:good ?-?bye|bye(?:[- ]bye)*(?: now| then)?|farewell)"
_SOFT = (
    r"(?:have a (?:nice|good|great|lovely|wonderful) (?:day|evening|weekend|one|night|"
    r"afternoon)|take care|see (?:you|ya)(?: (?:later|soon|then))?|"
    r"talk (?:to you )?(?:later|soon)|good ?night)"
)
_TAIL = r"(?:then|now|thanks?|thank you|again|for now|for calling|for your help|everyone|all)"


def _closing_re(heads: str) -> re.Pattern[str]:
    return re.compile(rf"^(?:{_LEAD} )*{heads}(?: {_TAIL})*$")


_CLOSING_ANY = _closing_re(f"(?:{_STRONG}|{_SOFT})")
_CLOSING_STRONG = _closing_re(_STRONG)


def _last_clause(text: str) -> str:
    """The words of the text's last clause, lower case, single-spaced."""
    clauses = [c for c in _CLAUSE.findall(text.lower().replace("-", " ")) if _TOKEN.search(c)]
    return " ".join(_TOKEN.findall(clauses[-1])) if clauses else ""


def is_closing(text: str, *, strong_only: bool = False) -> bool:
    """True when ``text`` ends with a goodbye: its last clause is nothing but a closing.

    ``strong_only`` accepts only an explicit "bye"/"goodbye": the model's replies often end
    with "Have a great day!" in the middle of a conversation, a caller's rarely do.
    """
    clause = _last_clause(text)
    if not clause:
        return False
    return bool((_CLOSING_STRONG if strong_only else _CLOSING_ANY).match(clause))


_HOLD = re.compile(
    r"\b(?:hold on|hang on|one (?:moment|sec(?:ond)?|minute)|just a (?:moment|sec(?:ond)?|minute)|"
    r"give me (?:a|one) (?:moment|sec(?:ond)?|minute)|wait a (?:moment|sec(?:ond)?|minute)|"
    r"bear with me|let me (?:check|see|look|find|get))\b"
)
HOLD_MAX_WORDS = 8  # a longer turn that mentions "one moment" is a request, not a pause


def is_hold_request(text: str) -> bool:
    """True for "hold on", "one moment please", "give me a second": the caller needs time."""
    words = _TOKEN.findall(text.lower())
    return 0 < len(words) <= HOLD_MAX_WORDS and bool(_HOLD.search(" ".join(words)))


class TurnEnd(Enum):
    COMPLETE = "complete"  # a question or a finished sentence: answer soon
    UNFINISHED = "unfinished"  # clearly goes on: wait longer
    UNKNOWN = "unknown"  # keep the fixed pause


_NUMBER_WORDS = frozenset(
    "zero oh one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen twenty thirty forty fifty sixty seventy eighty "
    "ninety hundred thousand double triple".split()
)
# Words a sentence cannot end on: it goes on after them.
_CONTINUERS = frozenset(
    "and or but so because then the a an to of my your our is are was it's its at in on with "
    "for from um uh er erm like if that which who".split()
)
_INTRO = re.compile(
    r"(?:number|phone|code|zip|postcode|address|account|reference|is|it's|spelled|spell|"
    r"spelt|letters?|at)$"
)
_SPELLING = re.compile(r"\b(?:spelled|spelt|spell(?:ing)?)\b")
# "my number is ..." with fewer digits after it than a phone number has: still being read out
# (whatever Whisper made of the digits: "five five five" is often "time time time").
_NUMBER_INTRO = re.compile(
    r"\b(?:(?:my|the|phone|mobile|cell|account|reference) number|code|pin|zip(?: code)?|"
    r"postcode) is\b(.*)$"
)
PHONE_DIGITS = 7
# "my surname is Nowak." and no more: callers go on to spell a name after a pause more often
# than not, and Whisper mangles a name alone ("My surname is no."); waiting longer costs a
# second, cutting them off mid-spelling costs the turn.
_NAME_INTRO = re.compile(r"\b(?:my|the|last|first|family|sur) ?name is\b(.*)$")
NAME_WORDS = 2


def _is_number(token: str) -> bool:
    return token.isdigit() or token in _NUMBER_WORDS


def _is_letter(token: str) -> bool:
    return len(token) == 1 and token.isalpha()


def end_of_turn(text: str) -> TurnEnd:
    """Whether the words heard at a pause look finished, unfinished, or either.

    Whisper closes every transcript with a full stop, even one cut mid-number, so the words
    decide and the stop does not: "My number is 555." is unfinished, "Two." (an answer) and
    "What time do you open?" are complete.
    """
    stripped = text.strip()
    if not stripped:
        return TurnEnd.UNKNOWN
    if stripped.endswith("?"):
        return TurnEnd.COMPLETE
    if stripped.endswith((",", "...", "…", "-", ";", ":")):
        return TurnEnd.UNFINISHED
    tokens = _TOKEN.findall(stripped.lower().replace("-", " "))
    if not tokens:
        return TurnEnd.UNKNOWN
    last = tokens[-1]
    if last in _CONTINUERS:
        return TurnEnd.UNFINISHED
    intro = _NUMBER_INTRO.search(" ".join(tokens))
    if intro is not None:
        said = intro.group(1).split()
        digits = sum(len(t) if t.isdigit() else t in _NUMBER_WORDS for t in said)
        if digits < PHONE_DIGITS:
            return TurnEnd.UNFINISHED
    name = _NAME_INTRO.search(" ".join(tokens))
    if name is not None and len(name.group(1).split()) <= NAME_WORDS:
        return TurnEnd.UNFINISHED
    for is_item in (_is_number, _is_letter):
        run = 0
        while run < len(tokens) and is_item(tokens[-1 - run]):
            run += 1
        if run == 0 or (run == 1 and is_item is _is_letter and last in ("a", "i")):
            continue
        before = " ".join(tokens[: len(tokens) - run])
        if run >= 2 or _INTRO.search(before) or _SPELLING.search(before):
            return TurnEnd.UNFINISHED
    if stripped.endswith(("!", ".")):
        return TurnEnd.COMPLETE
    return TurnEnd.UNKNOWN
