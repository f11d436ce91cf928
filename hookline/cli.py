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
    "sender": Command("deliver one Webhook's events (reads --config)", "hookline.sender.cmd.sender", True),
    "pool": Command("one replica of a sender pool: many Webhooks' engines", "hookline.sender.cmd.pool", True),
    "ingest": Command(
        "accept events on POST /v1/events and publish them", "hookline.sender.cmd.ingest", False
    ),
    "dev": Command("everything on one machine, no cluster", "hookline.dev", True),
    "list": Command("list Webhooks in the current kubeconfig context", "hookline.kubecli.listing", False),
    "test": Command("post test data to a Webhook through a WebhookTest", "hookline.kubecli.testing", False),
    "redrive": Command(
        "put a Webhook's dead letters back for delivery", "hookline.sender.cmd.redrive", False
    ),
    "attempts": Command("a Webhook's recent delivery attempts", "hookline.sender.cmd.attempts", False),
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


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """Every subcommand is listed; only the chosen one's module is imported (kopf is slow to load)."""
    parser = argparse.ArgumentParser(prog="hookline", description=__doc__)
    parser.add_argument("--version", action="version", version=f"hookline {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, spec in COMMANDS.items():
        p = sub.add_parser(name, help=spec.help, description=spec.help)
        if name != command:
            continue
        module = importlib.import_module(spec.module)
        module.add_arguments(p)
        if spec.outbound:
            add_outbound_flags(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    args = build_parser(command).parse_args(argv)
    run: Callable[[argparse.Namespace], int] = args._run
    try:
        return run(args)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
