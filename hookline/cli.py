"""The one `hookline` command; each subcommand is a module of its own (COMMANDS), imported only when used."""

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


# In the order `hookline --help` lists them: the commands for people first, then the processes the chart runs.
COMMANDS: dict[str, Command] = {
    "list": Command(
        "list Webhooks and their state (-A, -l, -o, -w as kubectl)", "hookline.kubecli.listing", False
    ),
    "test": Command("send a test event to a Webhook, print the answer", "hookline.kubecli.testing", False),
    "attempts": Command(
        "show a Webhook's delivery attempts and their errors", "hookline.kubecli.attempts", False
    ),
    "redrive": Command("deliver a Webhook's dead letters again", "hookline.kubecli.redrive", False),
    "verify": Command(
        "check a Webhook's or WebhookDomain's ownership proof now: each file, TXT record and domain",
        "hookline.kubecli.verify",
        True,
    ),
    "keys": Command(
        "show a Webhook's live signing keys (key ids, ed25519 public keys, -o jwks)",
        "hookline.kubecli.keys",
        False,
    ),
    "dev": Command("run it all on this machine, no cluster (hookline[dev])", "hookline.dev", True),
    "demo-receiver": Command(
        "run the demo receiver: serves ownership files, prints each delivery", "hookline.demo_receiver", False
    ),
    "nats-auth": Command(
        "make NATS accounts and credentials for an external NATS (nats.auth.existingSecret)",
        "hookline.sender.cmd.natsauth",
        False,
    ),
    "operator": Command("run the operator (the Helm chart starts it)", "hookline.operator.main", True),
    "ingest": Command(
        "run event intake, POST /v1/events (the chart starts it)", "hookline.sender.cmd.ingest", False
    ),
    "sender": Command(
        "run one Webhook's sender (the operator starts it)", "hookline.sender.cmd.sender", True
    ),
    "pool": Command(
        "run one replica of a sender pool (the operator starts it)", "hookline.sender.cmd.pool", True
    ),
}

DESCRIPTION = """hookline: webhook delivery on Kubernetes.

The first commands are for people and use your kubeconfig, as kubectl does; the last ones are the
processes that run in the cluster. `hookline COMMAND --help` shows a command's flags."""


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
    parser = argparse.ArgumentParser(
        prog="hookline", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
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
