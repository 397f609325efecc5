"""Cut SQL text into its statements, as PostgreSQL's own lexer (and psql) reads it.

The kit sends a step's statements one at a time: asyncpg prepares every statement it sends
and refuses text with several ("cannot insert multiple commands into a prepared statement").
A ``;`` ends a statement except inside a quoted string (``'...'``, ``E'...'`` with backslash
escapes), a quoted identifier (``"..."``), a dollar-quoted body (``$tag$...$tag$``), a
comment (``--`` to the end of the line, nested ``/* */``), parentheses, or the
``BEGIN ATOMIC ... END`` body of a ``CREATE FUNCTION`` / ``PROCEDURE`` (where ``CASE ... END``
nests). Each statement keeps its text (comments included), without the ``;`` that ended
it; a piece with nothing but white space and comments is not a statement.

Not the Supabase CLI's splitter (``ghostsync.supabase_parser``, with that tool's quirks):
this one reads the text as the server does. Imports nothing of ghostsync.
"""

from __future__ import annotations

import re

_WORD = re.compile(r"[A-Za-z_\u0080-\uffff][A-Za-z0-9_$\u0080-\uffff]*")
_ATOMIC = re.compile(r"\s+ATOMIC\b", re.IGNORECASE)
_DOLLAR_TAG = re.compile(r"\$(?:[A-Za-z_\u0080-\uffff][A-Za-z0-9_\u0080-\uffff]*)?\$")


def _skip_quoted(sql: str, i: int, quote: str, *, backslashes: bool) -> int:
    """The index just past the quoted text whose opening quote is at ``i``."""
    j = i + 1
    while j < len(sql):
        c = sql[j]
        if backslashes and c == "\\":
            j += 2
            continue
        if c == quote:
            if j + 1 < len(sql) and sql[j + 1] == quote:
                j += 2
                continue
            return j + 1
        j += 1
    return len(sql)


def _skip_block_comment(sql: str, i: int) -> int:
    depth, j = 0, i
    while j < len(sql):
        if sql.startswith("/*", j):
            depth, j = depth + 1, j + 2
        elif sql.startswith("*/", j):
            depth, j = depth - 1, j + 2
            if depth == 0:
                return j
        else:
            j += 1
    return len(sql)


def split(sql: str) -> list[str]:
    """The statements of ``sql``, in order, each stripped of surrounding white space."""
    statements: list[str] = []
    start = i = 0
    parens = 0
    atomic = 0  # depth of BEGIN ATOMIC ... END (and CASE ... END inside it)
    words: list[str] = []  # the statement's first words, upper-cased
    meaningful = False
    n = len(sql)
    while i < n:
        c = sql[i]
        if sql.startswith("--", i):
            end = sql.find("\n", i)
            i = n if end < 0 else end + 1
            continue
        if sql.startswith("/*", i):
            i = _skip_block_comment(sql, i)
            continue
        if c.isspace():
            i += 1
            continue
        meaningful = True
        if c == "'":
            escaped = i > 0 and sql[i - 1] in "eE" and (i < 2 or not _WORD.match(sql[i - 2]))
            i = _skip_quoted(sql, i, "'", backslashes=escaped)
            continue
        if c == '"':
            i = _skip_quoted(sql, i, '"', backslashes=False)
            continue
        if c == "$":
            tag = _DOLLAR_TAG.match(sql, i)
            if tag:
                end = sql.find(tag.group(), tag.end())
                i = n if end < 0 else end + len(tag.group())
                continue
            i += 1
            continue
        word = _WORD.match(sql, i)
        if word:
            upper = word.group().upper()
            if atomic:
                if upper in ("CASE", "BEGIN"):
                    atomic += 1
                elif upper == "END":
                    atomic -= 1
            elif upper == "BEGIN" and words[:1] == ["CREATE"] and _ATOMIC.match(sql, word.end()):
                atomic = 1
            if len(words) < 8:
                words.append(upper)
            i = word.end()
            continue
        if c == "(":
            parens += 1
        elif c == ")":
            parens = max(0, parens - 1)
        elif c == ";" and parens == 0 and atomic == 0:
            if meaningful:
                statements.append(sql[start:i].strip())
            start, meaningful, words = i + 1, False, []
        i += 1
    if meaningful:
        statements.append(sql[start:].strip())
    return statements
