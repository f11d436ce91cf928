"""`hookline redrive WEBHOOK`: put a Webhook's dead letters back for delivery (the NATS side is
hookline.sender.cmd.redrive), in the namespace every command uses."""

from __future__ import annotations

import argparse

from hookline.kubecli.buscommands import add_webhook_arguments, run_bus_command
from hookline.sender.cmd import redrive


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_webhook_arguments(parser)
    redrive.add_arguments(parser)


def run(args: argparse.Namespace) -> int:
    return run_bus_command(args, redrive.main)
