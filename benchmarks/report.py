"""Benchmark entries, medians and the JSON/Markdown report."""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


@dataclass
class Entry:
    """One figure beside its floor; ``ratio`` is oriented so that higher is better."""

    name: str
    value: float
    unit: str
    floor: str
    floor_value: float
    ratio: float
    target: float | None = None
    met: bool | None = None


def entry(
    name: str,
    value: float,
    unit: str,
    floor: str,
    floor_value: float,
    *,
    target: float | None = None,
    lower_is_better: bool = False,
) -> Entry:
    if lower_is_better:
        ratio = floor_value / value if value else 0.0
    else:
        ratio = value / floor_value if floor_value else 0.0
    met = None if target is None else ratio >= target
    return Entry(
        name, round(value, 3), unit, floor, round(floor_value, 3), round(ratio, 3), target, met
    )


def median_rate(fn: Callable[[], int], repeats: int) -> float:
    """Median over ``repeats`` runs of (items done / seconds)."""
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        items = fn()
        rates.append(items / (time.perf_counter() - start))
    return statistics.median(rates)


def write(entries: list[Entry], name: str = "latest") -> tuple[Path, Path]:
    RESULTS.mkdir(exist_ok=True)
    json_path = RESULTS / f"{name}.json"
    json_path.write_text(json.dumps([asdict(e) for e in entries], indent=2) + "\n")
    lines = [
        "| figure | value | floor | floor value | ratio | target | met |",
        "| --- | ---: | --- | ---: | ---: | ---: | --- |",
    ]
    for e in entries:
        target = "" if e.target is None else f"{e.target:g}"
        met = "" if e.met is None else ("yes" if e.met else "**no**")
        lines.append(
            f"| {e.name} | {e.value:,.1f} {e.unit} | {e.floor} | {e.floor_value:,.1f} | "
            f"{e.ratio:.2f} | {target} | {met} |"
        )
    md_path = RESULTS / f"{name}.md"
    md_path.write_text("\n".join(lines) + "\n")
    return json_path, md_path
