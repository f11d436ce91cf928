"""The one duration grammar of hookline: Kubernetes/Go style spans such as ``90s``, ``15m``, ``1h30m``,
``3d``.

A duration is one or more ``<number><unit>`` parts, units ``d``, ``h``, ``m``, ``s`` from largest to
smallest, each at most once, each number 1 to 999999 without a leading zero (so every duration is longer
than zero; a plain number is not a duration). The CRD (``DURATION_PATTERN``, RE2 as kube-apiserver runs
it), the typed API model, the CLI's ``--since`` and every duration flag of ingest parse through here
(flags with ``duration_arg``), so ``2h`` means the same everywhere and an error reads the same
everywhere. Pure.
"""

from __future__ import annotations

import argparse
import re

UNITS = (("d", 86400), ("h", 3600), ("m", 60), ("s", 1))
_PART = "[1-9][0-9]{0,5}"
# One alternative per largest unit, so the pattern needs no look-ahead (RE2 has none).
DURATION_PATTERN = (
    "^("
    + "|".join(
        f"{_PART}{unit}" + "".join(f"({_PART}{smaller})?" for smaller, _ in UNITS[i + 1 :])
        for i, (unit, _) in enumerate(UNITS)
    )
    + ")$"
)
_MATCH = re.compile(DURATION_PATTERN)
_PARTS = re.compile(r"([0-9]+)([dhms])")
EXAMPLES = "90s, 15m, 1h30m, 72h, 3d"


class DurationError(ValueError):
    """Not a duration of this grammar; the message quotes the text and gives examples."""


def parse_duration(text: str) -> float:
    """Seconds in ``text`` (``1h30m`` -> 5400.0); DurationError names what was wrong."""
    value = text.strip()
    if not _MATCH.match(value):
        raise DurationError(
            f"{text!r} is not a duration: use whole numbers with the units d, h, m, s from largest to "
            f"smallest, e.g. {EXAMPLES}"
        )
    seconds = dict(UNITS)
    return float(sum(int(number) * seconds[unit] for number, unit in _PARTS.findall(value)))


def format_duration(seconds: float) -> str:
    """The shortest spelling of whole ``seconds`` in this grammar (5400 -> ``1h30m``); 0 -> ``0s``."""
    rest = int(seconds)
    parts = []
    for unit, size in UNITS:
        count, rest = divmod(rest, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts) or "0s"


def duration_arg(text: str) -> float:
    """`parse_duration` as an argparse `type`: argparse prints the grammar's message as a usage error."""
    try:
        return parse_duration(text)
    except DurationError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
