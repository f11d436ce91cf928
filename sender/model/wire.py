"""Request bodies on the wire: ``form`` (what a PHP script reads from ``$_POST``) and ``json``.

``form`` follows PHP's ``http_build_query`` (RFC 1738 escaping: space is ``+``, only letters, digits and
``-_.`` stay literal) with the bracket style DESIGN.md fixes: maps as ``fields[email]=a%40b``, lists of
scalars as ``interests[]=x``. Lists holding maps or lists use indices (``a[0][k]=v``) because ``a[][k]``
would make PHP start a new element per key. Booleans are ``1``/``0``, ``None`` is an empty value, and
empty lists or maps send nothing (as ``http_build_query`` does), so a PHP receiver cannot tell them from
absent; `form_view` gives exactly what such a receiver sees.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote_plus

from hookline.sender.model.events import Event, compact_json

FORMATS: tuple[str, ...] = ("form", "json")
FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"
JSON_CONTENT_TYPE = "application/json"


# PHP ``urlencode`` as one table lookup per UTF-8 byte (``str.translate``, in C): letters, digits and
# ``-_.`` stay, space is ``+``, every other byte is ``%XX``. Same output as ``quote_plus(text, safe="")``
# with ``~`` escaped too, at a fraction of the cost; form bodies are rendered once per delivery.
_FORM_SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.")
_FORM_ESCAPES = {b: chr(b) if b in _FORM_SAFE else "+" if b == 0x20 else f"%{b:02X}" for b in range(256)}


def _php_urlencode(text: str) -> str:
    """PHP ``urlencode``: like ``quote_plus`` but ``~`` is escaped too."""
    return text.encode().decode("latin-1").translate(_FORM_ESCAPES)


@functools.lru_cache(maxsize=1024)
def _form_key(key: str) -> str:
    """Field names repeat in every event of a Webhook: encode each once."""
    return _php_urlencode(key)


def _scalar(value: Any) -> str:
    if value is None:
        return ""
    if value is True:
        return "1"
    if value is False:
        return "0"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))  # PHP prints 2.0 as "2"
    return str(value)


def _is_container(value: Any) -> bool:
    return isinstance(value, (Mapping, list, tuple))


def _walk(prefix: str, value: Any, out: list[str]) -> None:
    if type(value) is str:  # the common case first
        out.append(f"{prefix}={_php_urlencode(value)}")
    elif isinstance(value, Mapping):
        for key, item in value.items():
            _walk(f"{prefix}[{_form_key(str(key))}]", item, out)
    elif isinstance(value, (list, tuple)):
        indexed = any(_is_container(item) for item in value)
        for index, item in enumerate(value):
            _walk(f"{prefix}[{index}]" if indexed else f"{prefix}[]", item, out)
    else:
        out.append(f"{prefix}={_php_urlencode(_scalar(value))}")


def encode_form(payload: Mapping[str, Any]) -> str:
    """``application/x-www-form-urlencoded`` body, PHP style (see the module docstring)."""
    out: list[str] = []
    for key, value in payload.items():
        _walk(_form_key(str(key)), value, out)
    return "&".join(out)


def encode_json(payload: Mapping[str, Any]) -> bytes:
    """Compact UTF-8 JSON: the bytes the bus carries (`Event.to_bytes`), so `render_event` can reuse them."""
    return compact_json(payload)


def render_body(payload: Mapping[str, Any], fmt: str) -> tuple[str, bytes]:
    """``(content_type, body)`` for a Webhook's ``format``."""
    if fmt == "form":
        return FORM_CONTENT_TYPE, encode_form(payload).encode("ascii")
    if fmt == "json":
        return JSON_CONTENT_TYPE, encode_json(payload)
    raise ValueError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")


def content_type_of(fmt: str) -> str:
    if fmt == "form":
        return FORM_CONTENT_TYPE
    if fmt == "json":
        return JSON_CONTENT_TYPE
    raise ValueError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")


def encode_form_item(payload: Mapping[str, Any], index: int, name: str = "events") -> str:
    """One event of a form batch: ``events[3][type]=open&events[3][fields][email]=...``, so a PHP script
    finds the batch as a list of arrays in ``$_POST['events']``."""
    out: list[str] = []
    prefix = f"{name}[{index}]"
    for key, value in payload.items():
        _walk(f"{prefix}[{_form_key(str(key))}]", value, out)
    return "&".join(out)


def render_batch_part(event: Event, index: int, fmt: str) -> bytes:
    """The bytes event number `index` (0-based) adds to a batch body (separators aside)."""
    if fmt == "json":
        return event.raw if event.raw is not None else encode_json(event.payload)
    if fmt == "form":
        return encode_form_item(event.payload, index).encode("ascii")
    raise ValueError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")


def join_batch(parts: list[bytes], fmt: str) -> bytes:
    """A batch body from its parts in order: a JSON array, or the form items joined with ``&``."""
    if fmt == "json":
        return b"[" + b",".join(parts) + b"]"
    return b"&".join(parts)


def batch_size(part_bytes: int, count: int, fmt: str) -> int:
    """The body size of `count` parts holding `part_bytes` together: separators (and brackets) added."""
    if fmt == "json":
        return part_bytes + max(0, count - 1) + 2
    return part_bytes + max(0, count - 1)


def render_batch(events: list[Event], fmt: str) -> tuple[str, bytes]:
    """``(content_type, body)`` of a batch: a JSON array of the event objects, or a PHP-style form."""
    parts = [render_batch_part(event, index, fmt) for index, event in enumerate(events)]
    return content_type_of(fmt), join_batch(parts, fmt)


def render_event(event: Event, fmt: str) -> tuple[str, bytes]:
    """`render_body` of an event's payload; a JSON body is the event's bus bytes when it has them (they
    are the same compact JSON, see `Event.raw`), which saves encoding it once per delivery."""
    if fmt == "json" and event.raw is not None:
        return JSON_CONTENT_TYPE, event.raw
    return render_body(event.payload, fmt)


# ---------------------------------------------------------------------------------------------------------
# Decoding, as PHP fills $_POST (used by the demo receiver and tests)


def _split_name(name: str) -> tuple[str, list[str | None]]:
    """``a[b][]`` -> ``("a", ["b", None])``; ``None`` is an append (``[]``)."""
    open_at = name.find("[")
    if open_at <= 0:
        return name, []
    base, rest = name[:open_at], name[open_at:]
    keys: list[str | None] = []
    while rest.startswith("["):
        close = rest.find("]")
        if close < 0:
            break
        inner = rest[1:close]
        keys.append(inner if inner else None)
        rest = rest[close + 1 :]
    return base, keys


def _php_key(key: str) -> str | int:
    """PHP turns canonical decimal keys into integers."""
    if key.isdigit() and (key == "0" or not key.startswith("0")):
        return int(key)
    if key.startswith("-") and key[1:].isdigit() and not key[1:].startswith("0"):
        return int(key)
    return key


def _next_index(container: dict[str | int, Any]) -> int:
    ints = [k for k in container if isinstance(k, int)]
    return max(ints) + 1 if ints else 0


def _as_lists(value: Any) -> Any:
    """PHP arrays keyed 0..n-1 in order become lists; all other arrays become dicts with str keys."""
    if not isinstance(value, dict):
        return value
    converted = {k: _as_lists(v) for k, v in value.items()}
    if converted and list(converted) == list(range(len(converted))):
        return list(converted.values())
    return {str(k): v for k, v in converted.items()}


def decode_form(body: bytes | str) -> dict[str, Any]:
    """Parse a form body into what ``$_POST`` holds: nested dicts and lists of strings."""
    text = body.decode("utf-8", errors="replace") if isinstance(body, bytes) else body
    root: dict[str | int, Any] = {}
    for pair in text.split("&"):
        if not pair:
            continue
        raw_name, _, raw_value = pair.partition("=")
        base, keys = _split_name(unquote_plus(raw_name))
        if not base:
            continue
        value = unquote_plus(raw_value)
        if not keys:
            root[base] = value
            continue
        container = root.get(base)
        if not isinstance(container, dict):
            container = root[base] = {}
        for depth, key in enumerate(keys):
            slot: str | int = _next_index(container) if key is None else _php_key(key)
            if depth == len(keys) - 1:
                container[slot] = value
            else:
                child = container.get(slot)
                if not isinstance(child, dict):
                    child = container[slot] = {}
                container = child
    result = _as_lists(root)
    return result if isinstance(result, dict) else {}


def form_view(payload: Mapping[str, Any]) -> dict[str, Any]:
    """What a PHP receiver finds in ``$_POST`` for this payload (strings; empty lists and maps absent)."""
    return decode_form(encode_form(payload))
