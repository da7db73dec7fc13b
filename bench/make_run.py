"""End to end: `make run` by stage, from what the last `make run` recorded.

`make run` takes a quarter of an hour, too long to repeat inside `make bench`'s half hour, so the
replay records its own stages as it goes (tasks/stages.py: `<home>/replay/<dataset>/stages.json`,
with its commit and time) and the Makefile the install's seconds (`.venv/.install-seconds`). This
section renders that record and says which run it came from; with no record it says so.
"""

from __future__ import annotations

import os
from pathlib import Path

from bench.timing import REPO_ROOT
from tasks.settings import load_config
from tasks.stages import STAGES_FILE, read_stages, totals_markdown

TITLE = "## 7. End to end: `make run` by stage"


def markdown(config_path: Path, home: Path, venv: Path) -> str:
    config = load_config(config_path)
    record = home / "replay" / config.name / STAGES_FILE
    if not record.exists():
        return f"{TITLE}\n\nNo `make run` has been recorded in {home} yet: run it, then `make bench`.\n"
    watch, context = read_stages(record)
    whole = float(context["seconds"])
    install = venv / ".install-seconds"
    install_line = (
        f"The install (`make venv` from nothing) took {int(install.read_text()):d} s before it."
        if install.exists()
        else "The install's time was not recorded (a venv made before the Makefile recorded it)."
    )
    periods = [stage for stage in watch.stages if stage.kind in ("scoring", "monitoring") or "training" in stage.kind]
    lines = [
        TITLE,
        "",
        f"The last `make run` in this home: `{context.get('config', config_path.name)}` at commit "
        f"{str(context.get('commit', '?'))[:12]}, finished {context.get('finished_at', '?')}, "
        f"{whole:.0f} s from the command to its summary (install excluded). {install_line}",
        "",
        totals_markdown(watch, whole),
        "Each flow run, in order (seconds; a triggered training is timed from its drift event to its end):",
        "",
        "| stage | seconds |",
        "| --- | ---: |",
        *[f"| {stage.name} | {stage.seconds:.1f} |" for stage in periods],
    ]
    return "\n".join(lines) + "\n"


def run(config_path: Path) -> str:
    home = Path(os.environ.get("DRIFTLOOP_HOME", REPO_ROOT / ".driftloop"))
    return markdown(config_path, home, REPO_ROOT / ".venv")


if __name__ == "__main__":
    print(run(REPO_ROOT / "configs/flights.yaml"))
