"""A delivery's response headers are decoded only when read; they answer as aiohttp's would."""

from __future__ import annotations

from hookline.sender.transport.http1 import ResponseHeaders


def test_lookups_are_case_insensitive_and_give_the_first_value():
    headers = ResponseHeaders(
        [
            (b"Retry-After", b"120"),
            (b"Set-Cookie", b"a=1"),
            (b"set-cookie", b"b=2"),
            (b"X-Name", b"caf\xc3\xa9"),
        ]
    )
    assert headers.get("retry-after") == "120" and headers["RETRY-AFTER"] == "120"
    assert headers.get("Set-Cookie") == "a=1" and headers.getall("set-cookie") == ["a=1", "b=2"]
    assert headers.get("x-name") == "café"
    assert headers.get("Location") is None and headers.get("Location", "-") == "-"
    assert "retry-after" in headers and "location" not in headers
    assert len(headers) == 4 and {"Retry-After", "X-Name"} <= set(headers)
