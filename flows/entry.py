"""What every command-line entry shares: exit statuses, the `--config` option, config errors on stderr.

Each `python -m flows.<name>` and the `driftloop` command (flows/cli.py) use these, so one exit
status means the same everywhere: 0 done, 1 refused, 2 bad input, 3 a service unreachable.
"""

from __future__ import annotations

import argparse
import sys

from tasks.settings import ConfigError, TrainingConfig, load_config

DEFAULT_CONFIG = "configs/flights.yaml"
EXIT_OK = 0
EXIT_STOPPED = 1  # the run or command refused: bad data, the gate, nothing to work with
EXIT_BAD_INPUT = 2  # a config, argument, file or version that cannot be used
EXIT_UNAVAILABLE = 3  # a service (MLflow, Prefect) stayed unreachable after bounded retries


def parser_with_config(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config", default=DEFAULT_CONFIG, help="dataset config (YAML)")
    return parser


def load_or_report(path: str) -> TrainingConfig | None:
    """The config, or None after printing every problem with it (file and key) to stderr."""
    try:
        return load_config(path)
    except ConfigError as error:
        print(error, file=sys.stderr)
        return None
