"""The one `hookline` command. Each subcommand lives in its own module, imported only when used."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from typing import NamedTuple

from hookline import __version__


class Command(NamedTuple):
    help: str
    module: str  # exposes add_arguments(parser) and run(args) -> int
    outbound: bool  # takes the outbound safety flags


COMMANDS: dict[str, Command] = {
    "operator": Command("run the Kopf operator", "hookline.operator.main", True),
    "sender": Command("deliver one Webhook's events (reads --config)", "hookline.sender.main", True),
    "ingest": Command("accept events on POST /v1/events and publish them", "hookline.sender.ingest_main", False),
    "dev": Command("everything on one machine, no cluster", "hookline.dev", True),
    "list": Command("list Webhooks in the current kubeconfig context", "hookline.kubecli_list", False),
    "test": Command("post test data to a Webhook through a WebhookTest", "hookline.kubecli_test", False),
    "redrive": Command("put a Webhook's dead letters back for delivery", "hookline.sender.redrive", False),
}


def add_outbound_flags(parser: argparse.ArgumentParser) -> None:
    """Flags shared by every process that makes outbound requests (DESIGN.md, security rules)."""
    group = parser.add_argument_group("outbound safety")
    group.add_argument(
        "--allow-network",
        action="append",
        default=[],
        metavar="CIDR",
        help="allow requests to this network although it is private/loopback (repeatable; "
        "env HOOKLINE_ALLOW_NETWORKS, comma-separated)",
    )
    group.add_argument(
        "--allow-http",
        action="store_true",
        default=None,
        help="allow plain http:// URLs (env HOOKLINE_ALLOW_HTTP=1)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hookline", description=__doc__)
    parser.add_argument("--version", action="version", version=f"hookline {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, command in COMMANDS.items():
        p = sub.add_parser(name, help=command.help, description=command.help)
        module = importlib.import_module(command.module)
        module.add_arguments(p)
        if command.outbound:
            add_outbound_flags(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    run: Callable[[argparse.Namespace], int] = args._run
    try:
        return run(args)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
