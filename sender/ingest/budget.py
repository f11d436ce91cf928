"""The heavy lane's byte budget (pure, the clock passed in): a token bucket over the bytes of heavy
bodies, so what hostile bodies cost ingest's event loop (reading them, handing them to the worker) is
bounded per second however fast their senders are answered. A body larger than what is left runs the
bucket into debt and waits until it is paid back (heavy.py: read first, then waiting in its slot).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ByteBudget"]


@dataclass
class ByteBudget:
    """`rate` bytes per second, at most `burst` saved up; starts full."""

    rate: float
    burst: float
    level: float | None = None
    stamp: float = 0.0

    def take(self, size: int, now: float) -> float:
        """Take `size` bytes: the seconds until they are covered (0.0: now). The bytes are taken even
        when the caller must wait; one that will not wait gives them back (`give_back`)."""
        if self.level is None:
            self.level = self.burst
        else:
            self.level = min(self.burst, self.level + max(0.0, now - self.stamp) * self.rate)
        self.stamp = now
        self.level -= size
        return 0.0 if self.level >= 0 else -self.level / self.rate

    def give_back(self, size: int) -> None:
        if self.level is not None:
            self.level = min(self.burst, self.level + size)
