"""JSON logs from real processes: `--log-format json` or HOOKLINE_LOG_FORMAT=json makes every line of
the operator, ingest, a sender and a pool replica one JSON object a log collector can parse."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from hookline.sender.bus.natsserver import EmbeddedNats, free_port, terminate
from hookline.sender.observe.logs import JsonFormatter, configure_logging

HOOKLINE = str(Path(sys.executable).parent / "hookline")


def json_lines(text: str) -> list[dict[str, Any]]:
    """Every line as JSON (a line that is not JSON fails the test)."""
    entries = []
    for line in text.splitlines():
        if line.strip():
            entry = json.loads(line)
            assert {"time", "level", "logger", "message"} <= set(entry), line
            entries.append(entry)
    return entries


def run(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [HOOKLINE, *args], env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize(
    ("args", "env", "says"),
    [
        (["sender", "--config", "/nonexistent/sender.yaml", "--log-format", "json"], {}, "sender.yaml"),
        (
            ["pool", "--pool", "default", "--replica", "0", "--pool-key-file", "/nonexistent/key"],
            {"HOOKLINE_LOG_FORMAT": "json"},
            "/nonexistent/key",
        ),
        (
            ["operator", "--health-port", "0", "--metrics-port", "0"],
            {
                "HOOKLINE_LOG_FORMAT": "json",
                "HOOKLINE_SENDER_POD_TEMPLATE": '{"nodeSelectors": {}}',
            },
            "nodeSelectors",
        ),
    ],
    ids=["sender", "pool", "operator"],
)
def test_a_refused_start_is_one_json_line(args, env, says):
    result = run(args, env)
    assert result.returncode == 2, result.stderr
    (entry,) = [e for e in json_lines(result.stderr) if e["level"] == "ERROR"]
    assert says in entry["message"]


def test_an_unknown_log_format_is_refused_naming_it():
    result = run(["sender", "--config", "/nonexistent.yaml"], {"HOOKLINE_LOG_FORMAT": "yaml"})
    assert result.returncode == 2
    assert "'yaml'" in result.stderr and "HOOKLINE_LOG_FORMAT" in result.stderr


def test_ingest_logs_json_while_it_serves(tmp_path):
    with EmbeddedNats(tmp_path / "store", log_file=tmp_path / "nats.log") as nats:
        port = free_port()
        log_path = tmp_path / "ingest.log"
        with log_path.open("w") as log:
            process = subprocess.Popen(
                [
                    HOOKLINE,
                    "ingest",
                    "--nats-url",
                    nats.url,
                    "--listen",
                    f"127.0.0.1:{port}",
                    "--log-format",
                    "json",
                    "--insecure-no-auth",
                ],
                env={k: v for k, v in os.environ.items() if k != "HOOKLINE_INGEST_TOKEN"},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            try:
                deadline = time.monotonic() + 30
                while "ingest listening" not in log_path.read_text() and time.monotonic() < deadline:
                    assert process.poll() is None, log_path.read_text()
                    time.sleep(0.1)
            finally:
                terminate(process, timeout=10)
        entries = json_lines(log_path.read_text())
    (listening,) = [e for e in entries if e["message"].startswith("ingest listening")]
    assert listening["level"] == "INFO" and listening["logger"].startswith("hookline.")


def test_kopf_object_logs_name_their_object():
    record = logging.LogRecord(
        "kopf.objects", logging.INFO, __file__, 1, "Handler %r succeeded.", ("x",), None
    )
    record.k8s_ref = {"kind": "Webhook", "namespace": "shop", "name": "orders", "uid": "u-1"}
    entry = json.loads(JsonFormatter().format(record))
    assert entry["object"] == {"kind": "Webhook", "namespace": "shop", "name": "orders"}
    assert entry["message"] == "Handler 'x' succeeded."
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        failed = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    assert "RuntimeError: boom" in json.loads(JsonFormatter().format(failed))["error"]


def test_configure_logging_replaces_the_root_handlers():
    root = logging.getLogger()
    before = list(root.handlers), root.level
    try:
        assert configure_logging("json") == "json"
        assert len(root.handlers) == 1 and isinstance(root.handlers[0].formatter, JsonFormatter)
        assert configure_logging(None, env={}) == "text"
    finally:
        root.handlers[:], _ = before[0], root.setLevel(before[1])
