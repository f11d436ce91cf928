"""How every hookline process logs: plain text (the default) or one JSON object per line.

Log collectors (Loki, Elasticsearch, Cloud Logging) parse JSON lines without a pattern per
program; `--log-format json` or HOOKLINE_LOG_FORMAT=json (chart value logFormat) switches the
operator, ingest, senders and pool replicas alike. Every entry point calls `configure_logging`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Mapping
from typing import Any

from hookline.timestamps import rfc3339

LOG_FORMAT_ENV = "HOOKLINE_LOG_FORMAT"
LOG_FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """``{"time", "level", "logger", "message"}`` plus, when present, the Kubernetes object a Kopf
    handler logged about (``object``: kind, namespace, name) and the exception's traceback (``error``)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": rfc3339(record.created, milliseconds=True),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        ref = getattr(record, "k8s_ref", None)
        if isinstance(ref, Mapping):
            entry["object"] = {k: ref[k] for k in ("kind", "namespace", "name") if ref.get(k)}
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["error"] = record.exc_text
        return json.dumps(entry, ensure_ascii=False, default=str)


def log_format_of(flag: str | None, env: Mapping[str, str] = os.environ) -> str:
    """The flag, else HOOKLINE_LOG_FORMAT, else text; anything else is a ValueError naming both."""
    text = (flag or env.get(LOG_FORMAT_ENV, "") or "text").strip().lower()
    if text not in LOG_FORMATS:
        raise ValueError(f"log format {text!r} (--log-format / {LOG_FORMAT_ENV}) is not text or json")
    return text


def configure_logging(
    flag: str | None = None, *, level: int = logging.INFO, env: Mapping[str, str] = os.environ
) -> str:
    """One handler on the root logger (stderr) in the chosen format; returns the format."""
    chosen = log_format_of(flag, env)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if chosen == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    return chosen


def add_log_format_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        help=f"text (default) or json, one object per line (env {LOG_FORMAT_ENV}; chart value logFormat)",
    )
