"""The ``westflow`` command: a thin dispatcher over ``westflow_cli.commands.*``.

Each command module exposes ``register(subparsers)``, which adds its parser and
sets ``func(args) -> int``. Exit codes: 0 ok, 1 the submitted job failed, 2 bad
input (spec, config, shipped code), 3 infeasible, 4 cluster or storage failure.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import NoReturn

from admission.database import DatabaseError
from westflow.errors import (
    ClusterError,
    CodeError,
    ConfigError,
    InfeasibleError,
    SpecError,
    StorageError,
    WestflowError,
)

__all__ = ["main", "build_parser", "COMMANDS", "EXIT_OK", "EXIT_BAD_INPUT", "EXIT_INFEASIBLE", "EXIT_FAILURE"]

EXIT_OK, EXIT_BAD_INPUT, EXIT_INFEASIBLE, EXIT_FAILURE = 0, 2, 3, 4

# One module per command family under westflow_cli/commands/.
COMMANDS = ["plan", "submit", "init", "network", "up", "down", "status", "render", "simulate", "demo", "ui",
            "storage", "services", "queue", "quotas", "admitter", "exporter", "usage", "bill", "usage_charts"]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # noqa: D102 - argparse hook
        self.print_usage(sys.stderr)
        print(f"westflow: error: {message}", file=sys.stderr)
        raise SystemExit(EXIT_BAD_INPUT)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="westflow", description="Place work on China's national computing power network.")
    parser.add_argument("--config-dir", default=None, help="directory with network.yaml, tiers.yaml, policy.yaml")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name in COMMANDS:
        importlib.import_module(f"westflow_cli.commands.{name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``westflow`` console script."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except InfeasibleError as exc:
        print(f"westflow: infeasible: {exc}", file=sys.stderr)
        return EXIT_INFEASIBLE
    except (SpecError, ConfigError, CodeError) as exc:
        print(f"westflow: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except DatabaseError as exc:  # a malformed --db URL is bad input; a database that fails is a failure
        print(f"westflow: {'error' if exc.malformed else 'failed'}: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT if exc.malformed else EXIT_FAILURE
    except (ClusterError, StorageError, WestflowError) as exc:
        print(f"westflow: failed: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # output piped into `head`
        sys.stderr.close()
        return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
