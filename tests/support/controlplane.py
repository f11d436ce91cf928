"""A real Kubernetes control plane on loopback for tests: etcd, kube-apiserver, kube-controller-manager.

The flags are those of the assets' README (kubeassets.py finds the binaries). Everything listens on
127.0.0.1 with free ports, so several runs can share a machine; the certificates (kubecerts.py) and
the logs are in the caller's folder, and a component that does not come up fails with its log's tail.
"""

from __future__ import annotations

import json
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from kubeassets import ensure_assets
from kubecerts import kubeconfig, make_certificates

from hookline.sender.bus.natsserver import free_ports, terminate

SERVICE_RANGE = "10.96.0.0/12"
ISSUER = "https://kubernetes.default.svc.cluster.local"
START_TIMEOUT = 60.0
STOP_TIMEOUT = 5.0
LOG_TAIL = 40


class ControlPlaneError(RuntimeError):
    """A component did not come up; the message carries the tail of its log."""


@dataclass
class Component:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    log: IO[bytes]

    def tail(self, lines: int = LOG_TAIL) -> str:
        self.log.flush()
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def stop(self) -> None:
        terminate(self.process, STOP_TIMEOUT)
        self.log.close()


class ControlPlane:
    """etcd, kube-apiserver and kube-controller-manager, their certificates and logs in ``workdir``.

    `start()` brings up etcd and the API server and waits for /readyz; `start_controllers()` starts
    kube-controller-manager (separately, so CRDs the garbage collector must know are there first).
    `stop()` stops them in reverse: the controller manager (a client), the API server, then etcd.
    """

    def __init__(self, workdir: Path, binaries: Path | None = None) -> None:
        self.workdir = workdir
        self.binaries = binaries or ensure_assets()
        self.certs = make_certificates(workdir / "pki")
        self.components: list[Component] = []
        self.etcd_url = ""
        self.url = ""
        self.admin_kubeconfig = workdir / "admin.kubeconfig"

    # -- starting

    def start(self) -> ControlPlane:
        try:
            self._start_etcd()
            self._start_apiserver()
        except BaseException:
            self.stop()
            raise
        return self

    def _spawn(self, name: str, args: Sequence[str]) -> Component:
        log_path = self.workdir / f"{name}.log"
        log = log_path.open("wb")
        command = [str(self.binaries / name), *args]
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir)
        component = Component(name, process, log_path, log)
        self.components.append(component)
        return component

    def _wait(
        self,
        component: Component,
        url: str,
        *,
        context: ssl.SSLContext | None = None,
        expect: str | None = None,
    ) -> None:
        """Poll ``url`` until it answers 200 (and ``expect``); fail with the component's log tail."""
        deadline = time.monotonic() + START_TIMEOUT
        last = "no answer yet"
        while time.monotonic() < deadline:
            if component.process.poll() is not None:
                raise ControlPlaneError(
                    f"{component.name} exited with code {component.process.returncode} before it was "
                    f"ready; the end of {component.log_path}:\n{component.tail()}"
                )
            try:
                with urllib.request.urlopen(url, timeout=2, context=context) as answer:
                    body = answer.read().decode(errors="replace")
                    if expect is None or body.strip() == expect:
                        return
                    last = body
            except urllib.error.HTTPError as exc:
                last = f"{exc.code}: {exc.read().decode(errors='replace')[-2000:]}"
            except (OSError, urllib.error.URLError) as exc:
                last = str(exc)
            time.sleep(0.1)
        raise ControlPlaneError(
            f"{component.name} was not ready within {START_TIMEOUT:.0f} s at {url}; last answer: {last}\n"
            f"the end of {component.log_path}:\n{component.tail()}"
        )

    def _start_etcd(self) -> None:
        client, peer = free_ports(2)  # held together: one at a time, both could be the same port
        self.etcd_url = f"http://127.0.0.1:{client}"
        etcd = self._spawn(
            "etcd",
            [
                "--data-dir",
                str(self.workdir / "etcd"),
                "--listen-client-urls",
                self.etcd_url,
                "--listen-peer-urls",
                f"http://127.0.0.1:{peer}",
                "--unsafe-no-fsync",
            ],
        )
        self._wait(etcd, f"{self.etcd_url}/health")

    def _start_apiserver(self) -> None:
        (port,) = free_ports(1)
        self.url = f"https://127.0.0.1:{port}"
        c = self.certs
        apiserver = self._spawn(
            "kube-apiserver",
            [
                f"--etcd-servers={self.etcd_url}",
                f"--secure-port={port}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                "--endpoint-reconciler-type=none",
                "--authorization-mode=Node,RBAC",
                f"--client-ca-file={c.ca}",
                f"--tls-cert-file={c.serving}",
                f"--tls-private-key-file={c.serving_key}",
                f"--service-account-issuer={ISSUER}",
                f"--service-account-signing-key-file={c.service_account_key}",
                f"--service-account-key-file={c.service_account_pub}",
                f"--service-cluster-ip-range={SERVICE_RANGE}",
                f"--cert-dir={self.workdir / 'apiserver-certs'}",
            ],
        )
        kubeconfig(self.admin_kubeconfig, self.url, c.ca, cert=c.admin, key=c.admin_key)
        self._wait(apiserver, f"{self.url}/readyz", context=self.admin_ssl(), expect="ok")

    def start_controllers(self, controllers: str = "*,-deployment-controller") -> None:
        """kube-controller-manager: the garbage collector and the rest, without the Deployment
        controller by default (tests write a Deployment's status themselves; there is no kubelet)."""
        c = self.certs
        config = kubeconfig(
            self.workdir / "kcm.kubeconfig",
            self.url,
            c.ca,
            cert=c.controller_manager,
            key=c.controller_manager_key,
        )
        (port,) = free_ports(1)
        kcm = self._spawn(
            "kube-controller-manager",
            [
                f"--kubeconfig={config}",
                f"--authentication-kubeconfig={config}",
                f"--authorization-kubeconfig={config}",
                "--bind-address=127.0.0.1",
                f"--secure-port={port}",
                f"--cert-dir={self.workdir / 'kcm-certs'}",
                "--use-service-account-credentials=true",
                f"--service-account-private-key-file={c.service_account_key}",
                f"--root-ca-file={c.ca}",
                f"--client-ca-file={c.ca}",
                f"--cluster-signing-cert-file={c.ca}",
                f"--cluster-signing-key-file={c.ca_key}",
                f"--service-cluster-ip-range={SERVICE_RANGE}",
                "--leader-elect=false",
                f"--controllers={controllers}",
            ],
        )
        insecure = ssl.create_default_context()
        insecure.check_hostname, insecure.verify_mode = False, ssl.CERT_NONE  # its own self-signed cert
        self._wait(kcm, f"https://127.0.0.1:{port}/healthz", context=insecure, expect="ok")

    # -- clients

    def admin_ssl(self) -> ssl.SSLContext:
        """Trusts the test CA and presents the admin's client certificate (system:masters)."""
        context = ssl.create_default_context(cafile=str(self.certs.ca))
        context.load_cert_chain(str(self.certs.admin), str(self.certs.admin_key))
        return context

    def admin_request(self, method: str, path: str, body: Any = None) -> Any:
        """One request as the admin (blocking; for fixtures). Raises with the server's Status on >= 400."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(f"{self.url}{path}", data=data, method=method)
        request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=30, context=self.admin_ssl()) as answer:
                return json.loads(answer.read() or b"{}")
        except urllib.error.HTTPError as exc:
            raise ControlPlaneError(
                f"{method} {path}: {exc.code} {exc.read().decode(errors='replace')}"
            ) from None

    def wait_cached(self, paths: Sequence[str], within: float = START_TIMEOUT) -> None:
        """Wait until each list ``path`` is served from the watch cache: right after a CRD is
        established its cache is still filling and watches are answered 429 "storage is
        (re)initializing" (clients retry, but a test should start on a settled server)."""
        deadline = time.monotonic() + within
        for path in paths:
            while True:
                try:
                    self.admin_request("GET", f"{path}?resourceVersion=0&limit=1")
                    break
                except ControlPlaneError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)

    def service_account_token(self, namespace: str, name: str, seconds: int = 3600) -> str:
        """A bearer token for a ServiceAccount by TokenRequest (`kubectl create token`)."""
        body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest"}
        body["spec"] = {"expirationSeconds": seconds}
        path = f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token"
        return str(self.admin_request("POST", path, body)["status"]["token"])

    # -- stopping

    def stop(self) -> None:
        """Reverse start order: kube-controller-manager, kube-apiserver, then etcd."""
        while self.components:
            self.components.pop().stop()
