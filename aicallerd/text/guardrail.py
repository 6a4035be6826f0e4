"""Keep the LLM's reply fit to be spoken on a phone call.

Small local models (SmolLM2-135M by default) follow instructions loosely: they emit markdown,
lists, emojis and URLs, prefix replies with "Assistant:", run on past the length we asked for,
and after a few turns copy their previous reply word for word. The prompt asks nicely
(`SYSTEM_PROMPT`); `ReplyFilter` enforces it on each sentence before it
reaches TTS, because anything the TTS voice reads aloud ("asterisk asterisk") is heard by the
caller and cannot be taken back.

The filter is sans-I/O and sentence-at-a-time so that the turn can speak sentence 1 while
sentence 2 is still being generated, and can stop generation as soon as `.done` turns true.
"""

import re
import unicodedata
from collections.abc import Sequence
from urllib.parse import urlsplit

SYSTEM_PROMPT = (
    "You are a friendly and helpful assistant answering a phone call. "
    "Everything you write is spoken aloud to the caller by a voice, so talk the way people "
    "talk on the phone: warm, natural, short sentences. "
    "Keep every reply to at most three short sentences. "
    "Never use lists, markdown, emojis, or special symbols. "
    "If you are not sure what the caller means, ask one short clarifying question. "
    "If the caller asks whether you are a human, say honestly that you are an AI assistant."
)
"""The default system prompt (`[llm] system_prompt` overrides it)."""

# --- cleaning -------------------------------------------------------------------------------

_FENCE = re.compile(r"```[A-Za-z0-9_+-]*")
_IMAGE = re.compile(r"!\[([^\]]*)\]\([^)]*\)")
_LINK = re.compile(r"\[([^\]]+)\]\([^)]*\)")
_CODE = re.compile(r"`([^`]*)`")
_BOLD = re.compile(r"(\*\*|__)(?=\S)(.+?)(?<=\S)\1")
_ITALIC_STAR = re.compile(r"\*(?=\S)([^*]+?)(?<=\S)\*")
_ITALIC_UNDERSCORE = re.compile(r"(?<![A-Za-z0-9])_(?=\S)([^_]+?)(?<=\S)_(?![A-Za-z0-9])")
_HEADING = re.compile(r"^\s*#{1,6}\s+")
_QUOTE = re.compile(r"^\s*>+\s*")
_LIST_MARKER = re.compile(r"^\s*(?:[-*+•·▪◦‣–—]|\(?\d{1,3}[.)])\s+")
_RULE = re.compile(r"^\s*([-*_=])\1{2,}\s*$")
_ROLE = re.compile(
    r"^\s*(?:assistant|ai|bot|agent|aicaller|ai assistant|system|response|answer)\s*:\s*",
    re.IGNORECASE,
)
# The model starting to write the caller's next line: everything from here on is invented.
_OTHER_ROLE = re.compile(r"^\s*(?:user|caller|human|customer|you)\s*:", re.IGNORECASE)
_URL = re.compile(r"\b(?:https?://|www\.)[^\s<>()\"']+", re.IGNORECASE)
_ARROW = re.compile(r"\s*(?:->|=>|→|⇒|⟶)\s*")
_DEGREES = re.compile(r"\s*°\s*([CF])\b")
_SPACES = re.compile(r"\s+")
_SPACE_BEFORE_PUNCT = re.compile(r"\s+([,.;:!?…])")
_LEADING_JUNK = re.compile(r"^[\s,.;:!?…)\]}–—|/\\]+")

# Characters TTS would read aloud or choke on, with a spoken replacement ("" = drop).
_REPLACE = {
    "&": " and ",
    "°": " degrees ",
    "*": "",
    "`": "",
    "~": "",
    "^": "",
    "|": " ",
    "<": " ",
    ">": " ",
    "#": "",
    "•": " ",
    "·": " ",
    "\\": " ",
    "_": " ",
    "=": " equals ",
}
_SCALES = {"C": "Celsius", "F": "Fahrenheit"}
# Unicode categories dropped wholesale: other symbols (emoji, dingbats, ©), modifier symbols
# (skin tones), format characters (zero-width joiner), private use and unassigned.
_DROP_CATEGORIES = {"So", "Sk", "Cf", "Co", "Cn", "Cs"}
_DROP_CHARS = {"\ufe0e", "\ufe0f", "\u20e3"}  # variation selectors, keycap


def _speakable_url(match: re.Match[str]) -> str:
    """A URL becomes its host name ("example.com"), which TTS reads as "example dot com"."""
    url = match.group(0).rstrip(".,;:!?")
    trail = match.group(0)[len(url) :]
    if url.lower().startswith("www."):
        url = "http://" + url
    host = urlsplit(url).hostname or ""
    if host.startswith("www."):
        host = host[4:]
    return host + trail


def _strip_symbols(text: str) -> str:
    out = []
    for ch in text:
        if ch in _REPLACE:
            out.append(_REPLACE[ch])
        elif ch in _DROP_CHARS or unicodedata.category(ch) in _DROP_CATEGORIES:
            out.append(" ")
        else:
            out.append(ch)
    return "".join(out)


# Parenthetical asides are not spoken on a phone: small models also put the echoed turn
# guardrail there ("(In at most 3 short sentences.)").
_ASIDE = re.compile(r"\s*[(\[][^()\[\]]*[)\]]")


def clean_sentence(sentence: str) -> str:
    """Turn one LLM sentence into plain speakable text ("" if nothing speakable is left)."""
    text = sentence.replace("\r", " ").replace("\n", " ")
    if _RULE.match(text):
        return ""
    text = _FENCE.sub(" ", text)
    text = _IMAGE.sub(r"\1", text)
    text = _LINK.sub(r"\1", text)
    text = _URL.sub(_speakable_url, text)
    text = _CODE.sub(r"\1", text)
    for _ in range(2):  # markers can wrap each other: "**1. Item**", "- **Note:** text"
        text = _HEADING.sub("", text)
        text = _QUOTE.sub("", text)
        text = _LIST_MARKER.sub("", text)
        text = _BOLD.sub(r"\2", text)
        text = _ITALIC_STAR.sub(r"\1", text)
        text = _ITALIC_UNDERSCORE.sub(r"\1", text)
        text = _ROLE.sub("", text)
    text = _ARROW.sub(" to ", text)
    text = _ASIDE.sub(" ", text)
    text = _DEGREES.sub(lambda m: " degrees " + _SCALES[m.group(1)], text)
    text = _strip_symbols(text)
    text = _SPACES.sub(" ", text)
    text = _SPACE_BEFORE_PUNCT.sub(r"\1", text)
    text = _LEADING_JUNK.sub("", text).strip()
    if not any(ch.isalnum() for ch in text):
        return ""
    return text


# Chatbot boilerplate no caller wants to hear on the phone. "As an AI, ..." is cut off the
# front of a sentence (the rest may be the answer); the others drop the whole sentence. A
# plain "I'm an AI assistant" (the honest answer to "are you a human?") is kept.
_AS_AN_AI = re.compile(
    r"^\s*as an? (?:ai|a\.i\.|artificial intelligence|language model|ai language model|"
    r"ai assistant|virtual assistant|digital assistant)\b[^,]*,\s*",
    re.IGNORECASE,
)
_BOILERPLATE = re.compile(
    r"^\s*(?:i'?m|i am) (?:just|only|merely) an? (?:ai|a\.i\.|language model|computer program|"
    r"artificial intelligence|virtual assistant|chatbot)\b"
    r"|^\s*(?:i|as an ai,? i) (?:don'?t|do not) have (?:personal|feelings|emotions|"
    r"opinions|a body|the ability|real[- ]time|access to real)"
    r"|^\s*(?:i'?m|i am) (?:an? )?(?:ai )?language model\b",
    re.IGNORECASE,
)


def strip_boilerplate(sentence: str) -> str:
    """The sentence without chatbot boilerplate ("" when it was nothing else)."""
    if _BOILERPLATE.match(sentence):
        return ""
    rest = _AS_AN_AI.sub("", sentence, count=1)
    if rest != sentence:
        rest = rest[:1].upper() + rest[1:]
        if _BOILERPLATE.match(rest):
            return ""
    return rest


def _normalize(text: str) -> str:
    """Comparison form: lowercase words only, so punctuation and spacing do not hide a copy."""
    return " ".join(re.findall(r"[^\W_]+", text.lower()))


class ReplyFilter:
    """Clean and police one reply, sentence by sentence.

    `accept` returns the text to speak, or None to skip the sentence (boilerplate such as
    "As an AI ..." is dropped). `.done` turns true when the rest of the reply must not be
    spoken (the turn should stop generating): after `max_sentences` were accepted or the
    reply reached `max_words` (a phone-sized answer is about 30 words, ten seconds of speech;
    a sentence that would run past it is not started), when the reply repeats a sentence it
    already said, when it starts copying any of `previous_replies` (the call's earlier
    replies: a small model copies older ones too, not only the last), or when the model
    starts writing the caller's next line.
    Pass no `previous_replies` when the caller asked to hear an answer again.
    """

    COPY_MIN_CHARS = 24
    """A copy of the previous reply is only called one once this much of it has been repeated,
    so that short openers shared by both replies ("Sure.", "Okay.") are still spoken."""

    def __init__(
        self, max_sentences: int = 3, previous_replies: Sequence[str] = (), max_words: int = 30
    ) -> None:
        if max_sentences < 1:
            raise ValueError("max_sentences must be >= 1")
        self.max_sentences = max_sentences
        self.max_words = max_words
        self._words = 0
        self._sentences = 0
        self.done = False
        self._previous = [f"{p} " for p in map(_normalize, previous_replies) if p]
        self._accepted: list[str] = []
        self.refused: list[str] = []  # for the log: what the model wrote that was not said
        self._held = ""  # an opening that may be a copy, until the rest of its sentence comes
        self._seen: set[str] = set()
        self._so_far = ""
        self._orphan = False  # the next pieces finish a sentence whose opening was refused
        self._continuing = False  # the next pieces finish a sentence already begun aloud

    @property
    def spoken_text(self) -> str:
        """Everything accepted so far, joined: what the turn will have said."""
        return " ".join(self._accepted)

    @property
    def sentences(self) -> list[str]:
        return list(self._accepted)

    def refuses_length(self, words: int) -> bool:
        """True when a sentence of ``words`` words would be refused for length: a sentence
        still being written that long can stop being generated now."""
        return bool(self._accepted) and self._words + words > self._budget()

    def _budget(self) -> int:
        """Words the reply may reach: twice ``max_words`` to finish a sentence begun aloud
        (only a runaway one is cut off)."""
        return 2 * self.max_words if self._continuing else self.max_words

    def accept(self, sentence: str, *, whole: bool = True) -> str | None:
        """The text to speak for ``sentence``, or None (then kept in ``refused``)."""
        if self._held:
            sentence, self._held = f"{self._held} {sentence}", ""
        text = self._accept(sentence, whole)
        if text is None and not self._held:
            self.refused.append(sentence)
        return text

    def release(self, pending: str) -> str | None:
        """The held opening, to speak now, once the words written after it (``pending``, its
        last word perhaps unfinished) part from every earlier reply that starts with it; else
        None. It need not wait for the rest of its sentence: "I'm sorry for any
        misunderstanding, | but as a phone service provider, ..." took 0.9 s to write whole and
        0.9 s more to voice."""
        if not self._held:
            return None
        words = pending.split()
        if words and pending[-1:].isalnum():
            words.pop()  # perhaps half a word
        after = _normalize(" ".join(words))
        if not after:
            return None
        so_far = f"{self._so_far} {_normalize(self._held)} {after}".strip()
        if any(p.startswith(f"{so_far} ") for p in self._previous):
            return None
        held, self._held = self._held, ""
        text = self._accept(held, whole=False, diverged=True)
        if text is None:
            self.refused.append(held)
        return text

    def _accept(self, sentence: str, whole: bool, *, diverged: bool = False) -> str | None:
        """``whole=False``: a reply's opening clause or phrase, spoken ahead of the rest of
        its sentence; it counts toward ``max_words`` but not ``max_sentences``, and once it is
        spoken the rest of its sentence is too (a reply never stops mid-sentence for length).
        When such an opening is refused ("I'm an AI language model | with ..."), so are the
        pieces that finish it: alone they would be a fragment. An "As an AI, ..." clause only
        leaves its rest."""
        if self.done:
            return None
        if self._orphan:
            self._orphan = not whole
            return None
        if _OTHER_ROLE.match(sentence):
            self.done = True
            return None
        cleaned = clean_sentence(sentence)
        text = strip_boilerplate(cleaned)
        if not text:
            if cleaned and self._accepted:
                # Boilerplate after the reply has said something: end it here. Going on
                # would leave the caller in silence while the next sentence is written
                # (1.5 s under load).
                self.done = True
            self._orphan = not whole and bool(cleaned) and not _AS_AN_AI.match(cleaned)
            return None
        norm = _normalize(text)
        if norm in self._seen:
            self.done = True
            return None
        so_far = f"{self._so_far} {norm}".strip()
        if (
            not diverged
            and len(so_far) >= self.COPY_MIN_CHARS
            and any(p.startswith(f"{so_far} ") for p in self._previous)
        ):
            if whole:
                self.done = True
            else:
                # An opening phrase shared with an earlier reply ("I'm sorry for any
                # misunderstanding,") is not yet a copy: it waits for the rest of its
                # sentence. Refused at once, whole replies were, and so was their second try.
                self._held = sentence
            return None
        words = len(text.split())
        if self._accepted and self._words + words > self._budget():
            self.done = True  # a phone-sized reply: the next sentence would run too long
            return None
        self._so_far = so_far
        self._seen.add(norm)
        self._accepted.append(text)
        self._words += words
        self._sentences += whole
        self._continuing = not whole
        if whole and (self._sentences >= self.max_sentences or self._words >= self.max_words):
            self.done = True
        return text
