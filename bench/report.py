"""Figures, the printed table and bench/results.json."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.stats import Interval, interval, verdict, verdict_of_value

RESULTS = Path(__file__).resolve().parent / "results.json"
RUNS = Path(__file__).resolve().parent / "runs"
SCHEMA_VERSION = 2


@dataclass
class Figure:
    """One figure of a measurement.

    A ratio figure (``kind="ratio"``) carries its per-round ratios; its value is their
    geometric mean with a 95% interval, and ``control`` the same for its A/A control
    (two identical arms measured the same way). A ``kind="max"`` figure is a largest
    value (the longest batch) compared with its target outright; ``kind="value"`` a
    plain number. ``target`` is ``(op, bound)``, ``target_source`` "issue" or "bench".
    """

    id: str
    measurement: str
    name: str
    unit: str = "x"
    kind: str = "ratio"
    ratios: list[float] = field(default_factory=list)
    control_ratios: list[float] = field(default_factory=list)
    value: float | None = None
    target: tuple[str, float] | None = None
    target_source: str | None = None
    context: dict[str, Any] = field(default_factory=dict)
    note: str = ""
    samples: dict[str, Any] = field(default_factory=dict)

    @property
    def interval(self) -> Interval | None:
        return interval(self.ratios) if self.kind == "ratio" else None

    @property
    def control(self) -> Interval | None:
        return interval(self.control_ratios) if self.control_ratios else None

    @property
    def figure(self) -> float | None:
        found = self.interval
        return found.value if found is not None else self.value

    @property
    def verdict(self) -> str | None:
        if self.kind == "ratio":
            return verdict(self.interval, self.target)
        return verdict_of_value(self.value, self.target)

    def target_text(self) -> str:
        if self.target is None:
            return "-"
        op, bound = self.target
        return f"{op} {bound:g}" + ("x" if self.unit == "x" else f" {self.unit}")

    def value_text(self) -> str:
        value = self.figure
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return "n/a"
        if self.unit == "x":
            return f"{value:.3f}x"
        if self.unit == "ms":
            return f"{value:,.1f} ms"
        return f"{value:,.3g} {self.unit}"

    def as_dict(self) -> dict[str, Any]:
        found, control = self.interval, self.control
        return {
            "id": self.id, "measurement": self.measurement, "name": self.name, "unit": self.unit,
            "kind": self.kind, "value": self.figure,
            "interval95": found.as_dict() if found else None,
            "control95": control.as_dict() if control else None,
            "target": None if self.target is None else {"op": self.target[0], "value": self.target[1],
                                                         "text": self.target_text()},
            "target_source": self.target_source, "verdict": self.verdict,
            "context": self.context, "note": self.note,
            "samples": {"ratios": self.ratios, "control_ratios": self.control_ratios, **self.samples},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Figure:
        target = data.get("target")
        samples = dict(data.get("samples") or {})
        return cls(id=data["id"], measurement=data["measurement"], name=data["name"], unit=data.get("unit", "x"),
                   kind=data.get("kind", "ratio"), ratios=samples.pop("ratios", []),
                   control_ratios=samples.pop("control_ratios", []),
                   value=data.get("value") if data.get("kind") != "ratio" else None,
                   target=(target["op"], target["value"]) if target else None,
                   target_source=data.get("target_source"), context=data.get("context") or {},
                   note=data.get("note", ""), samples=samples)


def measurement_result(name: str, figures: list[Figure], **extra: Any) -> dict[str, Any]:
    """What a measurement module's ``run`` returns."""
    return {"measurement": name, "figures": [f.as_dict() for f in figures], **extra}


def context_text(context: dict[str, Any]) -> str:
    parts = []
    for key, value in context.items():
        if isinstance(value, bool) or value is None:
            parts.append(f"{key} {value}")
        elif isinstance(value, float):
            parts.append(f"{key} {value:,.3g}" if abs(value) < 1000 else f"{key} {value:,.0f}")
        elif isinstance(value, int):
            parts.append(f"{key} {value:,}")
        elif isinstance(value, str):
            parts.append(f"{key} {value}")
    return "; ".join(parts)


def render_table(figures: list[Figure]) -> str:
    head = ("figure", "value", "95% interval", "A/A noise", "target", "verdict", "context (absolute, for reference)")
    rows = [head]
    for f in figures:
        found, control = f.interval, f.control
        verdict_text = {None: "-", "met": "met", "missed": "MISSED", "undecided": "undecided"}[f.verdict]
        if f.target_source == "bench" and f.verdict is not None:
            verdict_text += "*"
        rows.append((f.name, f.value_text(), found.text() if found else "-", control.text() if control else "-",
                     f.target_text(), verdict_text, context_text(f.context)))
    widths = [max(len(r[i]) for r in rows) for i in range(6)]
    lines = []
    for k, row in enumerate(rows):
        lines.append("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row[:6])) + "  " + row[6])
        if k == 0:
            lines.append("  ".join("-" * w for w in widths) + "  " + "-" * 34)
    return "\n".join(lines)


def write_results(path: Path, *, run: dict[str, Any], figures: list[Figure], measurements: dict[str, Any]) -> None:
    targeted = [f for f in figures if f.verdict is not None]
    data = {
        "schema_version": SCHEMA_VERSION,
        **run,
        "verdicts": {v: [f.id for f in targeted if f.verdict == v] for v in ("met", "missed", "undecided")},
        "figures": [f.as_dict() for f in figures],
        "measurements": measurements,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")
