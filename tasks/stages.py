"""Where a long run's wall time went: named stages, timed in order, written beside the run's results.

`make run` is judged by its total (README, BENCHMARKS.md section 7); a total alone does not say
whether the server, the trainings or the baselines are the cost. Pure: no Prefect, no stores.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

STAGES_FILE = "stages.json"


@dataclass
class Stage:
    name: str
    kind: str  # what it is, shared by repeats ("scoring", "monitoring"...), for totals
    seconds: float


@dataclass
class Stopwatch:
    stages: list[Stage] = field(default_factory=list)

    @contextmanager
    def timed(self, kind: str, name: str | None = None) -> Iterator[None]:
        """Time the block as one stage; recorded even when it raises (a failed stage still cost its time)."""
        started = time.monotonic()
        try:
            yield
        finally:
            self.stages.append(Stage(name or kind, kind, time.monotonic() - started))

    def add(self, kind: str, seconds: float, name: str | None = None) -> None:
        self.stages.append(Stage(name or kind, kind, seconds))

    def totals(self) -> dict[str, tuple[int, float]]:
        """kind -> (how many stages, seconds), in order of first appearance."""
        out: dict[str, tuple[int, float]] = {}
        for stage in self.stages:
            count, seconds = out.get(stage.kind, (0, 0.0))
            out[stage.kind] = (count + 1, seconds + stage.seconds)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"stages": [vars(stage) for stage in self.stages]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Stopwatch:
        return cls([Stage(**stage) for stage in data["stages"]])

    def write(self, folder: Path, **context: str) -> Path:
        path = folder / STAGES_FILE
        path.write_text(json.dumps({**context, **self.to_dict()}, indent=2), encoding="utf-8")
        return path


def read_stages(path: Path) -> tuple[Stopwatch, dict[str, Any]]:
    """A written stopwatch and the context it was written with (commit, config, times)."""
    data = json.loads(path.read_text(encoding="utf-8"))
    return Stopwatch.from_dict(data), {k: v for k, v in data.items() if k != "stages"}


def totals_markdown(watch: Stopwatch, whole: float) -> str:
    """A table of each kind's count and seconds, and its share of `whole`."""
    lines = ["| stage | runs | seconds | share |", "| --- | ---: | ---: | ---: |"]
    for kind, (count, seconds) in watch.totals().items():
        lines.append(f"| {kind} | {count} | {seconds:.1f} | {seconds / whole:.0%} |")
    rest = whole - sum(stage.seconds for stage in watch.stages)
    lines.append(f"| other (between stages) | - | {rest:.1f} | {rest / whole:.0%} |")
    return "\n".join(lines) + "\n"
