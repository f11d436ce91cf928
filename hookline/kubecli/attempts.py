"""`hookline attempts WEBHOOK`: a Webhook's recent delivery attempts (read from NATS by
hookline.sender.cmd.attempts), in the namespace every command uses."""

from __future__ import annotations

import argparse

from hookline.kubecli.buscommands import add_webhook_arguments, run_bus_command
from hookline.sender.cmd import attempts


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_webhook_arguments(parser)
    attempts.add_arguments(parser)


def run(args: argparse.Namespace) -> int:
    return run_bus_command(args, attempts.main)
