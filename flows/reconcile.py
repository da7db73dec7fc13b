"""Repair what dead training runs left behind, by hand: `python -m flows.reconcile --config ...`.

Every training run does this when it starts, and so does the serving process; this command is
for an operator after an outage. It is not a flow on purpose: it must work while Prefect is the
thing that is down (the Prefect part of the repair is then reported as an error and retried by
the next reconciliation).
"""

from __future__ import annotations

import sys

from flows.entry import EXIT_BAD_INPUT, EXIT_STOPPED, load_or_report, parser_with_config
from tasks.recovery import reconcile
from tasks.registry import configure_mlflow
from tasks.stores import Stores


def main(argv: list[str] | None = None) -> int:
    parser = parser_with_config("Repair what dead training runs left behind (leases whose process is gone).")
    args = parser.parse_args(argv)
    config = load_or_report(args.config)
    if config is None:
        return EXIT_BAD_INPUT
    stores = Stores.from_env()
    stores.ensure_local_dirs()
    configure_mlflow(stores, experiment=config.model_name)
    repairs = reconcile(stores)
    print(f"reconciliation: {repairs.summary()}")
    return EXIT_STOPPED if repairs.errors else 0


if __name__ == "__main__":
    sys.exit(main())
