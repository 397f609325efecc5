"""How the Supabase CLI cuts a migration file into statements (``pkg/parser/token.go``, ``state.go``).

``ghostsync export-supabase`` needs it to write files the CLI takes as they are,
and ``ghostsync.testing.supabase_cli`` to apply a folder the way the CLI does.
A scanner of our own, written from the rules those files implement (quotes,
dollar quotes, comments, backslash escapes, parentheses, ``BEGIN ATOMIC``
bodies, ``;``), their quirks included; no upstream code.
"""

from __future__ import annotations

# -- the statement splitter ------------------------------------------------------------------------
#
# A character-driven state machine. Each state looks at the next character (already part of
# the current token) and returns the state for the character after it; ``None`` ends the
# token there (only a ``;`` seen in the ready state does). The rules, and the quirks a
# faithful splitter keeps, from pkg/parser/state.go:
#   ready      $ -> tag;  ' or " -> quoted;  - -> maybe a line comment;  / -> maybe a block
#              comment;  \ -> the next character is skipped;  ( -> protected until ")";
#              the C of BEGIN ATOMIC -> protected until "END";  ; -> end of statement
#   tag        $ closes the tag ($name$ or $$) -> dollar quoted;  letters, digits, _ stay;
#              anything else is read again as ready ($1 is a parameter, not a tag)
#   dollar     until the token ends with the tag (so "$$$" closes at once)
#   comment    -- up to and including the newline
#   block      /* ... */, nested; "/" not followed by "*" is read again as ready
#   quoted     '' and "" are escaped quotes; the character after the closing quote is
#              read again as ready (a backslash inside quotes is an ordinary character)
#   protected  feeds each character to the state it wraps, ignoring the end of a
#              statement; back to ready once the wrapped state is ready and the token
#              ends with the closer (case-insensitive; so one level of parentheses only,
#              and BEGIN ATOMIC ... ends at the first "END" anywhere in ready text)
# Statements keep their comments; each is right-trimmed of ";" then of white space, and
# empty ones are dropped. (The Go scanner steps one byte at a time, so non-ASCII dollar
# tags are never tags; ASCII-only tag characters reproduce that.)

class _Scan:
    """The text being split and where the current token starts."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.start = 0

    def ends_with(self, i: int, closer: str, *, fold: bool = False) -> bool:
        """Whether the token up to and including position ``i`` ends with ``closer``."""
        begin = i + 1 - len(closer)
        if begin < self.start:
            return False
        piece = self.text[begin:i + 1]
        return (piece.upper() if fold else piece) == closer

    def begins_atomic(self, i: int) -> bool:
        """Whether the token up to ``i`` ends with ``BEGIN ATOMIC`` (white space between, whole words)."""
        token = self.text[self.start:i + 1]
        if not token.upper().endswith("ATOMIC"):
            return False
        rest = token[:-6]
        if rest and _word_char(rest[-1]):
            return False
        rest = rest.rstrip()
        if not rest.upper().endswith("BEGIN"):
            return False
        rest = rest[:-5]
        return not rest or not _word_char(rest[-1])


def _word_char(c: str) -> bool:
    return c.isalnum() or c in "_$"


def _tag_char(c: str) -> bool:
    return c.isascii() and (c.isalnum() or c == "_")


class _State:
    def step(self, scan: _Scan, i: int) -> _State | None:
        raise NotImplementedError


class _Ready(_State):
    def step(self, scan: _Scan, i: int) -> _State | None:
        c = scan.text[i]
        if c == ";":
            return None
        if c == "$":
            return _Tag(i)
        if c in "'\"":
            return _Quoted(c)
        if c == "-":
            return _Dash()
        if c == "/":
            return _Block()
        if c == "\\":
            return _Skip()
        if c == "(":
            return _Protected(READY, ")")
        if c in "cC" and scan.begins_atomic(i):
            return _Protected(READY, "END")
        return self


READY = _Ready()


class _Tag(_State):
    def __init__(self, opened_at: int) -> None:
        self.opened_at = opened_at

    def step(self, scan: _Scan, i: int) -> _State | None:
        c = scan.text[i]
        if c == "$":
            return _Until(scan.text[self.opened_at:i + 1])
        if _tag_char(c):
            return self
        return READY.step(scan, i)


class _Until(_State):
    """Dollar-quoted text, or a line comment: everything up to the closer."""

    def __init__(self, closer: str) -> None:
        self.closer = closer

    def step(self, scan: _Scan, i: int) -> _State | None:
        return READY if scan.ends_with(i, self.closer) else self


class _Dash(_State):
    def step(self, scan: _Scan, i: int) -> _State | None:
        return _Until("\n") if scan.text[i] == "-" else READY.step(scan, i)


class _Block(_State):
    def __init__(self) -> None:
        self.depth = 0

    def step(self, scan: _Scan, i: int) -> _State | None:
        if scan.ends_with(i, "/*"):
            self.depth += 1
            return self
        if self.depth == 0:
            return READY.step(scan, i)
        if scan.ends_with(i, "*/"):
            self.depth -= 1
            if self.depth == 0:
                return READY
        return self


class _Quoted(_State):
    def __init__(self, quote: str) -> None:
        self.quote = quote
        self.closed = False

    def step(self, scan: _Scan, i: int) -> _State | None:
        c = scan.text[i]
        if c == self.quote:
            self.closed = not self.closed  # a quote right after the closing one is an escaped quote
            return self
        if self.closed:
            return READY.step(scan, i)
        return self


class _Skip(_State):
    def step(self, scan: _Scan, i: int) -> _State | None:
        return READY


class _Protected(_State):
    def __init__(self, inner: _State, closer: str) -> None:
        self.inner = inner
        self.closer = closer

    def step(self, scan: _Scan, i: int) -> _State | None:
        following = self.inner.step(scan, i)
        if following is not None:  # the end of a statement does not count in here
            self.inner = following
        if self.inner is READY and scan.ends_with(i, self.closer, fold=True):
            return READY
        return self


def split(sql: str) -> list[str]:
    """The raw statements of ``sql`` as the CLI's scanner cuts them (each with its ``;``)."""
    scan = _Scan(sql)
    state: _State = READY
    out = []
    for i in range(len(sql)):
        following = state.step(scan, i)
        if following is None:
            out.append(sql[scan.start:i + 1])
            scan.start = i + 1
            state = READY
        else:
            state = following
    if scan.start < len(sql):
        out.append(sql[scan.start:])
    return out


def _go_trim_space(text: str) -> str:
    # Go's strings.TrimSpace: unicode white space, but not the separators \x1c-\x1f Python counts
    start, end = 0, len(text)
    while start < end and text[start].isspace() and text[start] not in "\x1c\x1d\x1e\x1f":
        start += 1
    while end > start and text[end - 1].isspace() and text[end - 1] not in "\x1c\x1d\x1e\x1f":
        end -= 1
    return text[start:end]


def split_and_trim(sql: str) -> list[str]:
    """The statements the CLI sends for a file (``parser.SplitAndTrim``): each right-trimmed of
    ``;`` and of white space, empty ones dropped; comments kept."""
    out = []
    for token in split(sql):
        statement = _go_trim_space(token.rstrip(";"))
        if statement:
            out.append(statement)
    return out
