"""What every `python -m flows.<name>` command shares: the --config option and its error exit."""

from __future__ import annotations

import argparse
import sys

from tasks.settings import ConfigError, TrainingConfig, load_config

DEFAULT_CONFIG = "configs/flights.yaml"
EXIT_BAD_INPUT = 2  # a config or argument that cannot be used
EXIT_STOPPED = 1  # the run refused bad data or had nothing to work with
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
