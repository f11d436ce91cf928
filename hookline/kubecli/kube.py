"""What every command for people shares: the kubeconfig flags and the namespace a command acts on."""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping

from hookline.kubecli.errors import CommandError
from hookline.kubecli.kubeconfig import KubeConfig, load_kubeconfig, no_kubeconfig_error

NAMESPACE_ENV = "HOOKLINE_NAMESPACE"
DEFAULT_NAMESPACE = "default"


def add_connection_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--kubeconfig", metavar="FILE", help="kubeconfig file (default: $KUBECONFIG or ~/.kube/config)"
    )
    parser.add_argument("--context", help="kubeconfig context (default: the current one)")
    parser.add_argument(
        "-n",
        "--namespace",
        help=f"namespace (default: ${NAMESPACE_ENV}, else the kubeconfig context's, else "
        f"{DEFAULT_NAMESPACE})",
    )


def kube_config(args: argparse.Namespace, *, required: bool = True) -> KubeConfig | None:
    """The kubeconfig context of --kubeconfig/--context; without any kubeconfig, an error when
    ``required``, else None (the NATS commands can work without the cluster's API)."""
    config = load_kubeconfig(getattr(args, "kubeconfig", None), getattr(args, "context", None))
    if config is None and required:
        raise no_kubeconfig_error()
    return config


def command_namespace(
    args: argparse.Namespace, config: KubeConfig | None, env: Mapping[str, str] = os.environ
) -> str:
    """The namespace a command acts on, the same for every command: -n, else $HOOKLINE_NAMESPACE, else
    the kubeconfig context's namespace (as kubectl), else ``default``."""
    namespace = getattr(args, "namespace", None) or env.get(NAMESPACE_ENV)
    namespace = namespace or (config.namespace if config else None) or DEFAULT_NAMESPACE
    if not namespace.strip():
        raise CommandError("the namespace is empty; pass -n NAMESPACE", exit_code=2)
    return namespace
