"""What `hookline attempts` and `hookline redrive` (which read NATS, not the API) share with the other
commands: the Webhook argument, the kubeconfig flags, the one namespace rule, and a Webhook that exists.

Whether the Webhook exists is asked of the Kubernetes API when there is a kubeconfig; without one (or
with --nats-only, for `hookline dev` or a NATS reached without the cluster's API) its consumer in NATS
decides. The error says which was asked.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable

from hookline.api import WEBHOOK_PLURAL
from hookline.kubecli.client import KubeClient, NotFound
from hookline.kubecli.errors import EXIT_USAGE, CommandError, report
from hookline.kubecli.kube import add_connection_arguments, command_namespace, kube_config
from hookline.sender.model.config import consumer_name

# main(args, namespace, find_consumer=why NATS decides, or None when the API said the Webhook exists)
BusMain = Callable[..., Awaitable[int]]


def add_webhook_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("webhook", metavar="WEBHOOK", help="name of the Webhook")
    add_connection_arguments(parser)
    parser.add_argument(
        "--nats-only",
        action="store_true",
        help="do not ask the Kubernetes API whether the Webhook exists; its consumer in NATS decides "
        "(hookline dev, or a NATS reached without the cluster's API)",
    )


async def find_webhook(args: argparse.Namespace) -> tuple[str, str | None]:
    """The namespace, and why NATS must tell whether the Webhook exists (None: the API said it does)."""
    config = None if args.nats_only else kube_config(args, required=False)
    namespace = command_namespace(args, config)
    try:
        consumer_name(namespace, args.webhook)  # both are valid names
    except ValueError as exc:
        raise CommandError(str(exc), exit_code=EXIT_USAGE) from None
    if args.nats_only:
        return namespace, "--nats-only"
    if config is None:
        return namespace, "no kubeconfig to ask the Kubernetes API"
    try:
        async with KubeClient(config) as kube:
            await kube.get(WEBHOOK_PLURAL, namespace, args.webhook)
    except NotFound:
        raise CommandError(
            f"webhook {namespace}/{args.webhook} not found (asked the Kubernetes API of context "
            f"{config.context!r}; for the NATS of hookline dev, add --nats-only)"
        ) from None
    except CommandError as exc:  # unreachable, or refused: NATS can still tell
        print(f"warning: {exc}; asking NATS instead", file=sys.stderr)
        return namespace, "the Kubernetes API could not be asked"
    return namespace, None


async def _run(args: argparse.Namespace, main: BusMain) -> int:
    namespace, find_consumer = await find_webhook(args)
    return await main(args, namespace, find_consumer=find_consumer)


def run_bus_command(args: argparse.Namespace, main: BusMain) -> int:
    try:
        return asyncio.run(_run(args, main))
    except CommandError as exc:
        return report(exc)
