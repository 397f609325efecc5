"""Figures, their targets, the printed table and bench/results.json."""

from __future__ import annotations

import json
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results.json"
SCHEMA_VERSION = 1


@dataclass
class Figure:
    """One measured figure: usually a ratio of two things measured side by side.

    ``target`` is ``(op, threshold)`` with op ``>=`` or ``<=``, or None for a
    figure printed for context. ``target_source`` says who set the target:
    ``issue`` (the benchmark issue) or ``bench`` (set here, where the issue
    names a figure without a number; docs/PERFORMANCE.md gives the reason).
    """

    id: str
    scenario: str
    name: str
    value: float | None
    unit: str
    target: tuple[str, float] | None = None
    target_source: str | None = None
    context: dict[str, Any] = field(default_factory=dict)
    note: str = ""
    samples: dict[str, list[float]] = field(default_factory=dict)

    @property
    def met(self) -> bool | None:
        if self.target is None or self.value is None:
            return None
        op, threshold = self.target
        return self.value >= threshold if op == ">=" else self.value <= threshold

    def target_text(self) -> str:
        if self.target is None:
            return "-"
        op, threshold = self.target
        unit = "x" if self.unit == "x" else f" {self.unit}"
        return f"{op} {threshold:g}{unit}"

    def value_text(self) -> str:
        if self.value is None:
            return "n/a"
        if self.unit == "x":
            return f"{self.value:.3f}x"
        if self.unit == "ms":
            return f"{self.value:.1f} ms"
        return f"{self.value:.3g} {self.unit}"

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["target"] = None if self.target is None else {"op": self.target[0], "value": self.target[1],
                                                           "text": self.target_text()}
        data["met"] = self.met
        return data


def median(values: list[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def render_table(figures: list[Figure]) -> str:
    rows = [("scenario", "figure", "value", "target", "met", "context (absolute, for reference only)")]
    for f in figures:
        met = {True: "yes", False: "NO", None: "-"}[f.met]
        if f.target_source == "bench" and f.met is not None:
            met += "*"
        rows.append((f.scenario, f.name, f.value_text(), f.target_text(), met, context_text(f.context)))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = []
    for k, row in enumerate(rows):
        lines.append("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row[:5])) + "  " + row[5])
        if k == 0:
            lines.append("  ".join("-" * w for w in widths) + "  " + "-" * 38)
    return "\n".join(lines)


def context_text(context: dict[str, Any]) -> str:
    parts = []
    for key, value in context.items():
        if isinstance(value, float):
            parts.append(f"{key} {value:,.3g}" if abs(value) < 1000 else f"{key} {value:,.0f}")
        elif isinstance(value, (int, str)):
            parts.append(f"{key} {value:,}" if isinstance(value, int) else f"{key} {value}")
    return "; ".join(parts)


def write_results(path: Path, *, run: dict[str, Any], figures: list[Figure],
                  plans: dict[str, str] | None = None) -> None:
    targeted = [f for f in figures if f.met is not None]
    data = {
        "schema_version": SCHEMA_VERSION,
        **run,
        "all_targets_met": all(f.met for f in targeted),
        "targets_missed": [f.id for f in targeted if not f.met],
        "figures": [f.as_dict() for f in figures],
        "plans": plans or {},
    }
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")
