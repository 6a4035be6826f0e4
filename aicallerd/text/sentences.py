"""Cut a streamed LLM reply into sentences, so TTS can speak sentence 1 while 2 is generated.

`SentenceSplitter.feed(delta)` takes token deltas as they arrive and returns the sentences
that are now known to be complete; `flush()` returns the rest at the end of the reply and
resets the splitter for the next one.

Where it cuts:

- after ``.``, ``!``, ``?`` or ``…`` (a run of them, plus any closing quotes or brackets) when
  whitespace follows: never inside "3.5", "10.30" or "e.g.x";
- not after abbreviations that are followed by more of the sentence: titles ("Mr.", "Dr.",
  "St."), "e.g.", "i.e.", "vs."; not after "etc.", "a.m.", "U.S." and other dotted
  abbreviations unless the next word starts with a capital; not after an initial ("J. Smith");
  not after a list enumerator ("1. Milk"); not after a "." followed by a lowercase word (an
  abbreviation we do not know). An ellipsis always ends a piece, even mid-sentence: a pause
  there sounds natural and gets audio out sooner;
- at every newline (LLMs write lists and paragraphs);
- optionally (``first_clause_chars > 0``) after a short interjection that opens the reply
  ("Sure,", "Okay:", "Well —"): 1-3 words of at most that many characters before ``,``,
  ``;``, ``:`` or a dash followed by whitespace. Only the first piece of a reply; it is
  emitted even if shorter than ``min_chars``.
- optionally (``first_phrase_words > 0``) before a word that opens a clause or a
  prepositional phrase ("that", "and", "because", "with", "in", "for", ...), or before a
  modal verb after a long subject, once the first piece has that many words and no
  punctuation has come: "We have plenty of destinations | that offer mountain views.", "I'm
  here to assist you | in any way I can!", "The best way to start learning a new language |
  can be overwhelming!" (a 66-character first piece took Piper 0.9-1.0 s). Piper's time
  to first audio grows with the text (65 ms per second of speech on an idle core, 3-4x that
  on a busy one), so a long first sentence held the reply's first audio by 0.5-0.7 s. The cut falls
  where a speaker may breathe, never inside a phrase ("nine to five", "is | that").
  The rest of that first sentence is cut the same way after ``later_phrase_words``: under
  load the LLM writes a long sentence slower than its opening phrase is spoken, and the
  caller heard the gap (later sentences are written while earlier ones play).
  Such pieces are :class:`Piece` with ``partial`` set.

Pieces shorter than ``min_chars`` (after stripping) are not emitted alone; they are joined to
the next piece. Emitted pieces have their whitespace collapsed to single spaces.

When a boundary is confirmed: a sentence end can only be judged once the next non-space
character is known ("Dr. Smith" vs "etc. Then" vs "etc. and"), so the splitter waits for it
(or for a newline, which confirms on its own). With BPE tokenizers the space arrives glued to
the next word (" The"), so this costs nothing in practice. Every decision depends only on the
text, never on how it was chunked: feeding a reply token by token or all at once gives the
same pieces.
"""

import re

_TERMINALS = ".!?…"
_CLOSERS = "\"')]}»”’*"
_CLAUSE_PUNCT = ",;:"
_DASHES = "—–"

# Abbreviations never at the end of a sentence: the sentence goes on after them.
_NEVER_END = frozenset(
    "mr mrs ms mx dr prof st mt sr jr rev capt lt sgt sen "
    "vs e.g i.e cf approx dept ave blvd".split()
)
# Abbreviations that may end a sentence: split only when a capital follows.
_MAYBE_END = frozenset(
    "etc a.m p.m am pm u.s u.k u.n u.s.a inc ltd corp jan feb apr jun jul aug sep sept oct "
    "nov dec min hr hrs sec".split()
)
_DOTTED = re.compile(r"(?:[A-Za-z]\.)+[A-Za-z]")
_ENUMERATOR = re.compile(r"\(?(?:\d{1,3}|[A-Za-z])[.)]")
_SPACES = re.compile(r"\s+")
_OPENERS = "\"'([{«“‘*"
# Words a new phrase starts with: a first piece may be cut before one of them.
_PHRASE_STARTERS = frozenset(
    "that which who whom whose where when while because since so and but or if unless until "
    "although though whether with without like including "
    "in on at for from about into after before during through".split()
)
# A modal after a long subject is where a speaker breathes too ("The best way to start
# learning a new language | can be overwhelming!"), but not after a pronoun ("you | can").
_MODALS = frozenset("can could will would may might should must shall".split())
_SUBJECTS = frozenset("i you he she it we they there this that who which what one".split())
# ...but not after a word that needs what follows it ("is | to practice", "the | way").
_NEEDS_MORE = frozenset(
    "is are was were be been being am a an the to of my your our their his her its this "
    "these those very not".split()
)


def _collapse(text: str) -> str:
    return _SPACES.sub(" ", text).strip()


class Piece(str):
    """One piece of a reply, as text. ``partial``: a clause or phrase cut ahead of the rest of
    its sentence, which the next piece(s) finish."""

    partial: bool = False


def _partial(text: str) -> Piece:
    piece = Piece(text)
    piece.partial = True
    return piece


class SentenceSplitter:
    """Streaming sentence splitter for LLM token deltas (see the module docstring)."""

    def __init__(
        self,
        min_chars: int = 1,
        first_clause_chars: int = 0,
        long_clause_chars: int = 0,
        first_phrase_words: int = 0,
        later_phrase_words: int = 0,
    ) -> None:
        self.min_chars = min_chars
        self.first_clause_chars = first_clause_chars
        self.long_clause_chars = long_clause_chars
        self.first_phrase_words = first_phrase_words
        self.later_phrase_words = later_phrase_words
        self._buf = ""
        self._scan = 0  # everything before this index was judged "no boundary"
        self._emitted_any = False
        self._opening = True  # nothing but an interjection spoken yet: cut early
        self._first = True  # still in the reply's first sentence

    @property
    def pending(self) -> str:
        """Text written since the last piece: the sentence still being written."""
        return self._buf

    @property
    def pending_words(self) -> int:
        return len(self._buf.split())

    def feed(self, delta: str) -> list[str]:
        """Add a delta; return the pieces that are now known to be complete."""
        self._buf += delta
        return self._split()

    def flush(self) -> list[str]:
        """End of the reply: return what is left and reset for the next reply."""
        rest = _collapse(self._buf)
        self._buf = ""
        self._scan = 0
        self._emitted_any = False
        self._opening = self._first = True
        return [rest] if rest else []

    # --- internals ------------------------------------------------------------------------

    def _split(self) -> list[str]:
        out: list[str] = []  # Piece for the partial ones
        buf = self._buf
        i = self._scan
        n = len(buf)
        while i < n:
            c = buf[i]
            if c == "\n":
                piece = _collapse(buf[:i])
                if not piece or self._long_enough(piece):
                    if piece:
                        out.append(piece)
                        self._emitted_any = True
                        self._opening = self._first = False
                    buf = buf[i + 1 :]
                    n = len(buf)
                    i = 0
                    continue
                i += 1
                continue
            if c in _TERMINALS:
                end = i
                while end < n and buf[end] in _TERMINALS:
                    end += 1
                while end < n and buf[end] in _CLOSERS:
                    end += 1
                verdict, nxt = self._lookahead(buf, end)
                if verdict == "wait":
                    break
                if verdict == "newline" or verdict == "none":
                    i = end  # a newline ends the piece anyway; "none": no space, no boundary
                    continue
                piece = _collapse(buf[:end])
                if self._is_sentence_end(buf, i, end, buf[nxt]) and self._long_enough(piece):
                    out.append(piece)
                    self._emitted_any = True
                    self._opening = self._first = False
                    buf = buf[nxt:]
                    n = len(buf)
                    i = 0
                    continue
                i = end
                continue
            words = self.first_phrase_words if self._opening else self.later_phrase_words
            if c.isspace() and words > 0 and self._first:
                cut = self._phrase_cut(buf, i, words)
                if cut is not None:
                    out.append(_partial(_collapse(buf[:cut])))
                    self._emitted_any = True
                    self._opening = False
                    buf = buf[cut:]
                    n = len(buf)
                    i = 0
                    continue
            clause = None
            if (self.first_clause_chars > 0 or self.long_clause_chars > 0) and self._opening:
                clause = self._first_clause(buf, i)
            if clause is not None:
                verdict, nxt = self._lookahead(buf, i + 1)
                if verdict == "wait":
                    break
                if verdict in ("next", "newline"):
                    out.append(_partial(clause))
                    # After a lone "Sure," the rest may be cut early too: a long sentence
                    # behind it would leave a gap once "Sure," has been said.
                    self._opening = not self._emitted_any and len(clause.split()) <= 3
                    self._emitted_any = True
                    buf = buf[nxt:] if verdict == "next" else buf[i + 1 :]
                    n = len(buf)
                    i = 0
                    continue
            i += 1
        self._buf = buf
        self._scan = i
        return out

    def _long_enough(self, piece: str) -> bool:
        """Pieces too short, or with nothing to say ("..."), join the next piece instead."""
        return len(piece) >= self.min_chars and any(ch.isalnum() for ch in piece)

    @staticmethod
    def _lookahead(buf: str, pos: int) -> tuple[str, int]:
        """What follows a candidate boundary ending at pos.

        "none": no whitespace follows (no boundary); "newline": the whitespace holds a newline
        (the newline rule decides); "next": whitespace then a character at the returned index;
        "wait": the buffer ends before that is known.
        """
        if pos >= len(buf):
            return "wait", pos
        if not buf[pos].isspace():
            return "none", pos
        j = pos
        while j < len(buf) and buf[j].isspace():
            if buf[j] == "\n":
                return "newline", j
            j += 1
        if j >= len(buf):
            return "wait", j
        return "next", j

    @staticmethod
    def _is_sentence_end(buf: str, start: int, end: int, nxt: str) -> bool:
        """Judge the terminal run buf[start:end] (punctuation plus closers), nxt follows it."""
        run = buf[start:end].rstrip(_CLOSERS)
        if run != ".":
            return True  # "!", "?", "...", "…", "?!": always an end
        # the word the period belongs to (dotted abbreviations keep their inner periods)
        ws = start
        while ws > 0 and not buf[ws - 1].isspace():
            ws -= 1
        word = buf[ws:start].lstrip(_OPENERS)
        lower = word.lower()
        if lower in _NEVER_END:
            return False
        if nxt.islower():
            return False  # "approx. ten", "etc. and": the sentence goes on
        if lower in _MAYBE_END or _DOTTED.fullmatch(word):
            return nxt.isupper()
        if len(word) == 1 and word.isupper() and word != "I":
            return False  # an initial: "J. Smith" (but "Neither do I. Then" ends)
        piece = buf[:end].strip()
        if _ENUMERATOR.fullmatch(piece):
            return False  # "1. Milk": a list marker, not a sentence
        return True

    def _phrase_cut(self, buf: str, i: int, min_words: int) -> int | None:
        """Where to cut the piece when buf[i] is the space after a word that opens a phrase
        and at least ``min_words`` words come before it: that word's start."""
        start = i
        while start > 0 and not buf[start - 1].isspace():
            start -= 1
        word = buf[start:i].lower()
        if word not in _PHRASE_STARTERS and word not in _MODALS:
            return None
        head = buf[:start]
        words = head.split()
        if "\n" in head or len(words) < min_words:
            return None
        before = words[-1].lower()
        if before in _NEEDS_MORE or (word in _MODALS and before in _SUBJECTS):
            return None
        return start if self._long_enough(_collapse(head)) else None

    def _first_clause(self, buf: str, i: int) -> str | None:
        """The opening interjection (or long clause) ending at buf[i], or None."""
        c = buf[i]
        if c in _CLAUSE_PUNCT:
            mark = c
        elif c in _DASHES or (c == "-" and i > 0 and buf[i - 1] == " "):
            mark = ","  # "Okay — so": a dash is a pause; TTS reads a comma as one
        else:
            return None
        head = buf[:i]
        if "\n" in head:
            return None
        text = _collapse(head).rstrip(" -–—")
        words = text.split()
        interjection = (
            not self._emitted_any and 1 <= len(words) <= 3 and len(text) <= self.first_clause_chars
        )
        # A long opening clause is spoken before its sentence is finished: the caller hears
        # the reply start while the model is still writing the rest of it.
        long_clause = self.long_clause_chars > 0 and len(text) >= self.long_clause_chars
        if not (interjection or long_clause):
            return None
        if not any(ch.isalpha() for ch in text):
            return None  # "1, 2, 3"
        return text + mark
