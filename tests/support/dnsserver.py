"""A real DNS server on 127.0.0.1 for the ownership tests, built with dnslib (UDP and TCP, a thread each).

``zone`` maps a name (lower case, no final dot) to its TXT strings; a name not in it is NXDOMAIN, a
name with an empty list exists without TXT (NoAnswer); ``silent`` names get no answer at all (the
resolver's timeout). Every question is counted in ``queries`` (name, type), so a test can count the
proofs a change cost.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from dnslib import QTYPE, RCODE, RR, TXT, DNSRecord
from dnslib.dns import DNSError
from dnslib.server import DNSHandler, DNSServer

from hookline.sender.bus.natsserver import free_port


@dataclass
class LoopbackDNS:
    zone: dict[str, list[str]] = field(default_factory=dict)
    silent: set[str] = field(default_factory=set)
    queries: list[tuple[str, str]] = field(default_factory=list)
    transports: list[str] = field(default_factory=list)  # "udp" or "tcp", one per question
    port: int = 0
    udp_limit: int = 0  # answers over UDP larger than this are truncated (TC): the resolver asks over TCP
    _servers: list[DNSServer] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def nameserver(self) -> str:
        """The resolver address as the operator's --dns-nameserver takes it."""
        return f"127.0.0.1:{self.port}"

    def reset(self) -> None:
        """An empty zone and no queries (a server shared by several tests)."""
        with self._lock:
            self.zone.clear()
            self.silent.clear()
            self.queries.clear()
            self.transports.clear()

    def queries_for(self, name: str) -> int:
        with self._lock:
            return sum(1 for q, _ in self.queries if q == name.lower())

    def resolve(self, request: Any, handler: Any) -> Any:
        """dnslib's resolver interface: the answer to one request."""
        question = request.q
        name = str(question.qname).rstrip(".").lower()
        with self._lock:
            self.queries.append((name, QTYPE[question.qtype]))
            self.transports.append(handler.protocol)
            records = self.zone.get(name)
            silent = name in self.silent
        if silent:
            raise DNSError(f"{name}: staying silent")  # dnslib logs it and sends nothing back
        reply = request.reply()
        if records is None:
            reply.header.rcode = RCODE.NXDOMAIN
            return reply
        if question.qtype == QTYPE.TXT:
            for text in records:
                reply.add_answer(RR(question.qname, QTYPE.TXT, rdata=TXT(text), ttl=1))
        return reply

    def start(self) -> LoopbackDNS:
        self.port = free_port()
        handler = type("LimitedHandler", (_TruncatingHandler,), {"limit": self.udp_limit})
        for tcp in (False, True):
            server = DNSServer(
                self, port=self.port, address="127.0.0.1", tcp=tcp, logger=_Quiet(), handler=handler
            )
            server.start_thread()
            self._servers.append(server)
        return self

    def stop(self) -> None:
        """Both servers at once (each shutdown waits for its poll interval, 0.5 s)."""
        stoppers = [threading.Thread(target=server.stop) for server in self._servers]
        for stopper in stoppers:
            stopper.start()
        for stopper, server in zip(stoppers, self._servers, strict=True):
            stopper.join()
            server.server.server_close()
        self._servers.clear()


class _TruncatingHandler(DNSHandler):  # type: ignore[misc]
    """An answer over UDP larger than ``limit`` goes out as the question with the TC bit and no records,
    as a real server truncates (dnslib's own truncation drops the question, which resolvers refuse)."""

    limit = 0

    def get_reply(self, data: bytes) -> bytes:
        rdata: bytes = super().get_reply(data)
        if self.protocol == "udp" and self.limit and len(rdata) > self.limit:
            truncated = DNSRecord.parse(data).reply()
            truncated.header.tc = 1
            return truncated.pack()  # type: ignore[no-any-return]
        return rdata


class _Quiet:
    """dnslib's logger interface, saying nothing (its default prints every request)."""

    def __getattr__(self, _: str) -> Any:
        return lambda *args, **kwargs: None
