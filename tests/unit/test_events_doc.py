"""docs/events.md is what hack/events_doc.py writes from the event model: one source for the code that
checks events, the schema ingest serves and the page people read."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from hookline.api import EVENT_TYPES
from hookline.sender.model.eventtypes import EVENT_SPECS

ROOT = Path(__file__).resolve().parents[2]


def generator() -> Any:
    spec = importlib.util.spec_from_file_location("hookline_events_doc", ROOT / "hack" / "events_doc.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_events_doc_is_what_the_generator_produces():
    assert (ROOT / "docs" / "events.md").read_text() == generator().render(), (
        "run .venv/bin/python hack/events_doc.py and commit docs/events.md"
    )


def test_every_type_and_required_field_is_on_the_page():
    page = generator().render()
    for event_type in EVENT_TYPES:
        section = page.split(f"## {event_type}\n", 1)[1].split("\n## ", 1)[0]
        for name in EVENT_SPECS[event_type].required:
            assert f"| `{name}` | **required** |" in section, (event_type, name)
        for name in EVENT_SPECS[event_type].optional:
            assert f"| `{name}` | optional" in section, (event_type, name)
