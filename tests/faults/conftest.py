"""The fault tests' fixture: a full hookline data path on loopback (see harness.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from harness import Harness


@pytest.fixture
async def harness(tmp_path, nats_server) -> AsyncIterator[Harness]:
    async with Harness(tmp_path, nats_server) as h:
        yield h
