"""The kubeconfig-backed client both commands use, and the shared flags."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from kubernetes import client, config
from kubernetes.config.config_exception import ConfigException

from hookline.api import GROUP


class CommandError(Exception):
    """A problem the user can fix; printed without a traceback."""


def add_connection_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--kubeconfig", metavar="FILE", help="kubeconfig file (default: $KUBECONFIG or ~/.kube/config)"
    )
    parser.add_argument("--context", help="kubeconfig context (default: the current one)")
    parser.add_argument("-n", "--namespace", help="namespace (default: the context's, else default)")


@dataclass
class Kube:
    api: client.CustomObjectsApi
    namespace: str


def connect(args: argparse.Namespace) -> Kube:
    try:
        config.load_kube_config(config_file=args.kubeconfig, context=args.context)
        _, active = config.list_kube_config_contexts(config_file=args.kubeconfig)
    except (ConfigException, OSError) as exc:
        raise CommandError(
            f"cannot use the kubeconfig: {exc}; check --kubeconfig/--context or KUBECONFIG"
        ) from None
    if args.context:
        contexts, _ = config.list_kube_config_contexts(config_file=args.kubeconfig)
        active = next((c for c in contexts if c["name"] == args.context), active)
    namespace = args.namespace or (active or {}).get("context", {}).get("namespace") or "default"
    return Kube(client.CustomObjectsApi(), namespace)


def api_error(exc: client.ApiException, what: str) -> CommandError:
    if exc.status == 404:
        return CommandError(f"{what}: not found (are the hookline CRDs installed? is the name right?)")
    if exc.status == 403:
        return CommandError(f"{what}: forbidden; ask for RBAC permission on {GROUP} resources")
    return CommandError(f"{what}: the API server answered {exc.status} {exc.reason}")
