"""Values any receiver can take, anywhere in an event: finite numbers, 64-bit integers, valid Unicode,
bounded nesting. Pure; ingest checks every value with `value_problems` before anything is published.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from hookline.api import FieldError

MAX_DEPTH = 32  # nesting levels below the event object (parameters.a.b... or lists in lists)
MAX_INT = 2**63 - 1  # integers must fit a signed 64-bit integer (PHP's int)
MIN_INT = -(2**63)


def json_type(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, (int, float)):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "array"
    if isinstance(v, dict):
        return "object"
    return type(v).__name__


class HugeInteger(int):
    """An integer literal too long to convert (a JSON decoder hook returns this; see `value_problems`)."""

    digits: int = 0


def value_problems(obj: Mapping[str, Any], *, max_depth: int = MAX_DEPTH) -> list[FieldError]:
    """Values no receiver can take, anywhere in an event: non-finite numbers (NaN, Infinity, 1e400),
    integers beyond 64 bits, strings that are not valid Unicode (lone surrogates such as \\ud800,
    in values or keys), nesting deeper than `max_depth`. Each error names the field's path.

    Iterative, so a deep document cannot exhaust the stack; it never descends past the limit. An
    event whose values are all plain (the common case) is passed by `_plain` without building paths.
    """
    if _plain_object(obj, 0, max_depth):
        return []
    errors: list[FieldError] = []
    stack: list[tuple[str, Any, int]] = [(str(k), v, 1) for k, v in reversed(obj.items())]
    for key in obj:
        if isinstance(key, str) and bad_unicode(key):
            errors.append(FieldError(printable(key), "field name is not valid Unicode (a lone surrogate)"))
    while stack:
        path, value, depth = stack.pop()
        if isinstance(value, str):
            if bad_unicode(value):
                errors.append(FieldError(path, "is not valid Unicode text (holds a lone surrogate)"))
        elif isinstance(value, bool) or value is None:
            continue
        elif isinstance(value, HugeInteger):
            errors.append(
                FieldError(path, f"integer of {value.digits} digits; integers must fit 64 bits (+-{MAX_INT})")
            )
        elif isinstance(value, int):
            if not MIN_INT <= value <= MAX_INT:
                errors.append(
                    FieldError(path, f"integer out of range; integers must fit 64 bits (+-{MAX_INT})")
                )
        elif isinstance(value, float):
            if not math.isfinite(value):
                errors.append(
                    FieldError(
                        path,
                        "must be a finite number (NaN, Infinity and overflows such as 1e400 are not JSON)",
                    )
                )
        elif isinstance(value, (dict, list)):
            if depth >= max_depth and value:
                errors.append(FieldError(path, f"nested deeper than {max_depth} levels"))
                continue
            if isinstance(value, dict):
                for key, item in reversed(value.items()):
                    name = str(key)
                    if bad_unicode(name):
                        errors.append(
                            FieldError(
                                f"{path}.{printable(name)}",
                                "field name is not valid Unicode (a lone surrogate)",
                            )
                        )
                        continue
                    stack.append((f"{path}.{name}", item, depth + 1))
            else:
                stack.extend(
                    (f"{path}[{i}]", item, depth + 1) for i, item in reversed(list(enumerate(value)))
                )
        if len(errors) >= 50:  # enough to act on; the rest of a hostile document is not walked
            break
    return errors


def _plain(value: Any, depth: int, max_depth: int) -> bool:
    """True when `value_problems` would find nothing in it (a fast check; False means: look closer)."""
    kind = type(value)
    if kind is str:
        return value.isascii() or not bad_unicode(value)
    if kind is int:
        return MIN_INT <= value <= MAX_INT
    if value is None or kind is bool:
        return True
    if kind is float:
        return math.isfinite(value)
    if kind is dict:
        return _plain_object(value, depth, max_depth)
    if kind is list:
        if not value:
            return True
        if depth + 1 >= max_depth:
            return False
        return all(_plain(item, depth + 1, max_depth) for item in value)
    return False


def _plain_object(obj: Mapping[str, Any], depth: int, max_depth: int) -> bool:
    if obj and depth + 1 >= max_depth:
        return False
    for key, item in obj.items():
        if type(item) is str:  # the common case, inline
            if not item.isascii() and bad_unicode(item):
                return False
        elif not _plain(item, depth + 1, max_depth):
            return False
        if not key.isascii() and bad_unicode(key):
            return False
    return True


def bad_unicode(text: str) -> bool:
    if text.isascii():
        return False
    try:
        text.encode()
    except UnicodeEncodeError:
        return True
    return False


def printable(text: str) -> str:
    return text.encode("utf-8", "backslashreplace").decode()
