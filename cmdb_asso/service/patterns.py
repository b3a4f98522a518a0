"""Which regular expressions a caller may have the store evaluate: those whose matching stays cheap.

The store evaluates a pattern against every document a query reaches, by backtracking (MongoDB's PCRE, the
embedded server's Python `re` under its database lock), and no time limit stops the embedded server. So a
pattern is refused before it is sent when its matching can take time exponential in the text, or polynomial
of a high degree: a repeated group that itself holds a quantifier or an alternation (`(a+)+`, `(\\w|\\w)*`),
a back-reference, more than a few unbounded quantifiers (`\\w*\\w*\\w*\\w*\\w*!`), or a repeat count past a
small bound (`a{1,4294967295}`). Plain text, classes, anchors and a few quantifiers (`^host-\\d+$`,
`(\\d+\\.){3}\\d+`) pass.
"""

from __future__ import annotations

import re
import warnings

# A counted repeat at most this large is no repetition that can blow up when nested (`(\d+\.){3}`).
SMALL_REPEAT = 10
# No counted repeat may ask for more than this.
MAX_REPEAT = 100
# At most this many quantifiers that repeat without a small bound, in the whole pattern.
MAX_UNBOUNDED = 4
_COUNTED = re.compile(r"\{([0-9]*)(,?)([0-9]*)\}")
# What may follow `(?`: non-capturing and named groups, lookarounds, inline flags.
_GROUP_PREFIX = re.compile(r"\?(?::|=|!|<=|<!|P?<[A-Za-z_][A-Za-z0-9_]*>|[aiLmsux-]+[:)])")


class _Refused(Exception):
    """The pattern's matching may cost too much."""


def is_cheap(pattern: str) -> bool:
    """Whether matching `pattern` stays cheap whatever the text (see the module's docstring); a pattern that
    is not a regular expression at all is not cheap either."""
    try:
        with warnings.catch_warnings():  # Python's own hints (a "possible nested set"): the caller's pattern, not ours
            warnings.simplefilter("ignore")
            re.compile(pattern)
    except (re.error, OverflowError, RecursionError, ValueError):
        return False
    try:
        _Scanner(pattern).scan()
    except _Refused:
        return False
    return True


class _Scanner:
    """One pass over a pattern: atoms, groups and the quantifiers that follow them."""

    def __init__(self, pattern: str) -> None:
        self.pattern = pattern
        self.at = 0
        # Per open group: whether it holds a quantifier or an alternation.
        self.open: list[bool] = []
        self.unbounded = 0

    def scan(self) -> None:
        """Raise _Refused where the pattern may cost too much."""
        text = self.pattern
        while self.at < len(text):
            char = text[self.at]
            if char == "(":
                self._open_group()
                continue
            if char == "|":
                self._mark()
                self.at += 1
                continue
            holds_repetition = False
            if char == ")":
                holds_repetition = self.open.pop() if self.open else False
                self.at += 1
            elif char == "\\":
                self._escape()
            elif char == "[":
                self._class()
            else:
                self.at += 1
            self._quantifier(holds_repetition)

    def _mark(self) -> None:
        if self.open:
            self.open[-1] = True

    def _open_group(self) -> None:
        self.at += 1
        if self.pattern.startswith("?", self.at):
            prefix = _GROUP_PREFIX.match(self.pattern, self.at)
            if prefix is None:  # a back-reference by name, a conditional, a comment: refused
                raise _Refused
            if prefix.group().endswith(")"):  # inline flags alone, `(?i)`: no group
                self.at = prefix.end()
                return
            self.at = prefix.end()
        self.open.append(False)

    def _escape(self) -> None:
        following = self.pattern[self.at + 1 : self.at + 2]
        if (following.isdigit() and following != "0") or following in ("k", "g"):
            raise _Refused  # a back-reference
        self.at += 2

    def _class(self) -> None:
        text, at = self.pattern, self.at + 1
        if text.startswith("^", at):
            at += 1
        if text.startswith("]", at):
            at += 1
        while at < len(text) and text[at] != "]":
            at += 2 if text[at] == "\\" else 1
        self.at = at + 1

    def _quantifier(self, holds_repetition: bool) -> None:
        """Read the quantifier after an atom, if any; `holds_repetition`: the atom is a group that holds one."""
        text = self.pattern
        if holds_repetition:
            self._mark()  # the enclosing group holds it too
        if self.at >= len(text):
            return
        char = text[self.at]
        repeats = False
        if char in "*+":
            repeats = True
            self.at += 1
        elif char == "?":
            self.at += 1
        elif char == "{" and (counted := _COUNTED.match(text, self.at)):
            low, comma, high = counted.groups()
            counts = [int(number) for number in (low, high) if number]
            if any(count > MAX_REPEAT for count in counts):
                raise _Refused
            repeats = bool(comma and not high) or max(counts, default=0) > SMALL_REPEAT
            self.at = counted.end()
            if not counts:
                return  # `{}` or `{,}` is plain text to the server
        else:
            return
        if self.at < len(text) and text[self.at] in "?+":  # lazy or possessive
            self.at += 1
        if repeats:
            if holds_repetition:
                raise _Refused
            self.unbounded += 1
            if self.unbounded > MAX_UNBOUNDED:
                raise _Refused
        self._mark()
