"""Every setting ghostsync reads, with its one syntax, its default and where it comes from.

A setting is given, in order of precedence, as ``-x name=value`` (Alembic and
``ghostsync migrate``), as a command-line option where a command has one, as
the environment variable ``GHOSTSYNC_<NAME>``, or not at all (the default).

Durations have one syntax everywhere: a number and a unit, ``500ms``,
``1.5s``, ``15m``, ``2h``, ``1d``. A bare number is refused, since it cannot
say whether it means seconds or milliseconds.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
DURATION_HELP = "a number and a unit: 500ms, 1.5s, 15m, 2h or 1d"


class SettingError(ValueError):
    """A setting has a value ghostsync cannot use; the message is the one line to print."""


def parse_duration(value: str, *, name: str = "duration") -> timedelta:
    """``"500ms"``, ``"1.5s"``, ``"15m"``, ``"2h"``, ``"1d"`` as a timedelta; anything else is refused."""
    match = _DURATION.match(value or "")
    if not match:
        raise SettingError(f"bad {name} {value!r}: use {DURATION_HELP}")
    return timedelta(seconds=float(match.group(1)) * _UNIT_SECONDS[match.group(2)])


def format_duration(value: timedelta) -> str:
    """The shortest exact spelling in the same syntax (``timedelta(seconds=90)`` -> ``"90s"``)."""
    ms = round(value.total_seconds() * 1000)
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if ms and ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"


@dataclass(frozen=True)
class Setting:
    """One setting: its ``-x`` name, its kind, its default and what it is for."""

    name: str
    kind: str  # "duration" or "count"
    default: str
    help: str
    minimum: float = 0.0

    @property
    def env(self) -> str:
        return f"GHOSTSYNC_{self.name.upper()}"

    def parse(self, raw: str, source: str) -> timedelta | int:
        where = f"{self.name} (from {source})"
        if self.kind == "duration":
            value = parse_duration(raw, name=where)
            if value.total_seconds() < self.minimum or value.total_seconds() <= 0:
                raise SettingError(f"bad {where} {raw!r}: must be more than 0"
                                   + (f" and at least {format_duration(timedelta(seconds=self.minimum))}"
                                      if self.minimum else ""))
            return value
        text = (raw or "").strip()
        if not text.isdigit() or int(text) < self.minimum:
            raise SettingError(f"bad {where} {raw!r}: use a whole number of at least {int(self.minimum)}")
        return int(text)


SETTINGS: dict[str, Setting] = {
    s.name: s
    for s in (
        Setting("lock_timeout", "duration", "400ms",
                "the most a signup, sign-in or token refresh waits behind one attempt of a ghostsync step "
                "that locks an auth table or public.users (the waits for all of the step's locks together, "
                "which ghostsync shares out among them, plus the time they are held until its commit)"),
        Setting("lock_retries", "count", "20", "how often a step whose locks were busy is tried again"),
        Setting("lock_backoff", "duration", "100ms",
                "the pause before the first retry; it doubles on each retry, up to 2s"),
        Setting("statement_timeout", "duration", "60s", "the longest any other DDL step may run"),
        Setting("batch_size", "count", "5000", "auth users per backfill batch", minimum=1),
        Setting("dead_after", "duration", "60s",
                "a backfill run that made no progress for this long is taken for dead "
                "(how a killed run shows through a transaction-mode pooler)"),
        Setting("progress_interval", "duration", "10s",
                "how often a backfill without a terminal logs a progress line"),
        Setting("writers_wait", "duration", "60s",
                "how long a backfill waits at its end for open transactions that write auth.users (a "
                "replica-mode import fires no trigger) so that it can vouch for the accounts they commit; "
                "past it the run ends interrupted"),
    )
}


def resolve(name: str, x_args: Mapping[str, str] | None = None, *, given: str | None = None,
            default: str | None = None, environ: Mapping[str, str] | None = None) -> timedelta | int:
    """The value of setting ``name``: ``-x`` argument, then ``given`` (a command-line option),
    then the environment, then ``default`` (a revision's own) or the setting's default."""
    setting = SETTINGS[name]
    environ = os.environ if environ is None else environ
    for raw, source in (
        ((x_args or {}).get(name), f"-x {name}"),
        (given, f"--{name.replace('_', '-')}"),
        (environ.get(setting.env), setting.env),
    ):
        if raw is not None and raw != "":
            return setting.parse(raw, source)
    return setting.parse(default if default is not None else setting.default, "its default")


def resolve_duration(name: str, x_args: Mapping[str, str] | None = None, **kwargs: object) -> timedelta:
    value = resolve(name, x_args, **kwargs)  # type: ignore[arg-type]
    assert isinstance(value, timedelta)
    return value


def resolve_count(name: str, x_args: Mapping[str, str] | None = None, **kwargs: object) -> int:
    value = resolve(name, x_args, **kwargs)  # type: ignore[arg-type]
    assert isinstance(value, int)
    return value


def check_environment(environ: Mapping[str, str] | None = None) -> None:
    """Refuse a bad ``GHOSTSYNC_*`` value up front, with one line (before any work starts)."""
    environ = os.environ if environ is None else environ
    for setting in SETTINGS.values():
        raw = environ.get(setting.env)
        if raw not in (None, ""):
            setting.parse(raw, setting.env)


def check_x_arguments(x_args: Mapping[str, str]) -> None:
    """Refuse a bad ``-x`` value of any setting with one line, before a command starts any work (``-x``
    names that are no setting of ghostsync's, such as ``database_url`` or a host env.py's own, pass)."""
    for name, raw in x_args.items():
        if name in SETTINGS and raw not in (None, ""):
            SETTINGS[name].parse(raw, f"-x {name}")


def environment_help() -> str:
    """The environment variables, one per line, for ``--help``."""
    width = max(len(s.env) for s in SETTINGS.values())
    return "\n".join(f"  {s.env:<{width}}  {s.help} (default {s.default}; -x {s.name}=...)"
                     for s in SETTINGS.values())
