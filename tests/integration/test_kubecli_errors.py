"""The commands for people fail as kubectl does: one line on stderr saying what failed and what to do, a
non-zero exit code, never a traceback. Run as a user runs them: the installed `hookline` script."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from hookline.cli import COMMANDS
from hookline.sender.bus.natsserver import free_port

HOOKLINE = str(Path(sys.executable).parent / "hookline")


def hookline(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [HOOKLINE, *argv], capture_output=True, text=True, timeout=60, env=env, cwd="/", check=False
    )


def write_kubeconfig(path: Path, server: str, context: str = "prod") -> str:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": server}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": context, "context": {"cluster": "c", "user": "u", "namespace": "shop"}}],
        "current-context": context,
    }
    path.write_text(yaml.safe_dump(config))
    return str(path)


@pytest.mark.parametrize("scheme", ["http", "https"])
@pytest.mark.parametrize("command", [["list"], ["list", "-w"], ["test", "orders"]])
def test_an_unreachable_api_server_is_one_line_and_exit_1(tmp_path, scheme, command):
    server = f"{scheme}://127.0.0.1:{free_port()}"
    config = write_kubeconfig(tmp_path / "config", server)
    done = hookline(*command, "--kubeconfig", config)
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr == (
        f"error: cannot reach the Kubernetes API at {server}: connection refused; check your kubeconfig "
        "context 'prod' (kubectl config current-context)\n"
    )


def test_a_missing_kubeconfig_is_one_line(tmp_path):
    done = hookline("list", "--kubeconfig", str(tmp_path / "absent"))
    assert done.returncode == 1
    assert done.stderr == f"error: kubeconfig {tmp_path / 'absent'}: no such file; check --kubeconfig\n"

    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "KUBECONFIG": ""}
    done = hookline("list", env=env)
    assert done.returncode == 1 and done.stderr.count("\n") == 1
    assert done.stderr.startswith("error: no kubeconfig found (--kubeconfig, $KUBECONFIG or ~/.kube/config)")

    config = write_kubeconfig(tmp_path / "config", "https://127.0.0.1:1")
    done = hookline("test", "orders", "--kubeconfig", config, "--context", "staging")
    assert done.returncode == 1
    assert done.stderr == f"error: kubeconfig {config} has no context 'staging' (it has: prod)\n"


def test_a_credential_plugin_that_is_not_installed_is_named(tmp_path):
    config = Path(write_kubeconfig(tmp_path / "config", "https://127.0.0.1:1"))
    doc = yaml.safe_load(config.read_text())
    doc["users"][0]["user"] = {
        "exec": {
            "apiVersion": "client.authentication.k8s.io/v1",
            "command": "gke-gcloud-auth-plugin-absent",
            "installHint": "Install gke-gcloud-auth-plugin for use with kubectl",
        }
    }
    config.write_text(yaml.safe_dump(doc))
    done = hookline("list", "--kubeconfig", str(config))
    assert done.returncode == 1
    assert done.stderr == (
        "error: user 'u' gets its credentials from `gke-gcloud-auth-plugin-absent`, which is not installed "
        "(Install gke-gcloud-auth-plugin for use with kubectl)\n"
    )


@pytest.mark.slow
def test_the_nats_commands_say_in_one_line_that_nats_is_unreachable(tmp_path):
    dead = f"nats://127.0.0.1:{free_port()}"
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "KUBECONFIG": str(tmp_path / "none")}
    for command in ("attempts", "redrive"):
        done = hookline(command, "orders", "-n", "shop", "--nats-url", dead, env=env)
        assert done.returncode == 1 and done.stdout == ""
        assert (
            done.stderr.startswith(f"error: cannot connect to NATS at {dead}")
            and done.stderr.count("\n") == 1
        )


def test_help_lists_every_command_in_one_line_a_user_understands(tmp_path):
    done = hookline("--help", env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "COLUMNS": "120"})
    assert done.returncode == 0
    assert "imported only when used" not in done.stdout and "module" not in done.stdout
    listed: dict[str, str] = {}  # name -> help; argparse puts the help of a long name on the next line
    section = done.stdout.split("  COMMAND\n", 1)[1].split("\n\n", 1)[0]
    for line in section.splitlines():
        if line.startswith("    ") and not line.startswith("     "):
            name, _, text = line.strip().partition(" ")
            listed[name] = text.strip()
        else:
            listed[name] = f"{listed[name]} {line.strip()}".strip()
    assert listed == {name: command.help for name, command in COMMANDS.items()}
    assert list(COMMANDS)[:4] == ["list", "test", "attempts", "redrive"]  # the commands for people first
