"""The operator logs in without the kubernetes client library: its ServiceAccount in a pod (as client-go's
InClusterConfig), else the kubeconfig."""

from __future__ import annotations

import logging

import kopf
import yaml

from hookline.operator.adapters import login


def test_in_a_pod_the_service_account_and_the_service_address(tmp_path):
    (tmp_path / "token").write_text("sa-token\n")
    (tmp_path / "ca.crt").write_text("-----BEGIN CERTIFICATE-----\n")
    (tmp_path / "namespace").write_text("hookline-system")
    env = {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}
    info = login.in_cluster(kopf.OperatorSettings(), env, tmp_path)
    assert info is not None
    assert (info.server, info.token, info.default_namespace) == (
        "https://10.96.0.1:443",
        "sa-token",
        "hookline-system",
    )
    assert info.ca_path == str(tmp_path / "ca.crt")
    ipv6 = login.in_cluster(kopf.OperatorSettings(), {**env, "KUBERNETES_SERVICE_HOST": "fd00::1"}, tmp_path)
    assert ipv6 is not None and ipv6.server == "https://[fd00::1]:443"
    assert login.in_cluster(kopf.OperatorSettings(), {}, tmp_path) is None  # not in a pod
    assert login.in_cluster(kopf.OperatorSettings(), env, tmp_path / "absent") is None


def test_outside_a_pod_the_kubeconfig(tmp_path, monkeypatch):
    config = {
        "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:6443"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u", "namespace": "shop"}}],
        "current-context": "x",
    }
    (tmp_path / "config").write_text(yaml.safe_dump(config))
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "config"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    info = login.login(settings=kopf.OperatorSettings(), logger=logging.getLogger("test"))
    assert info is not None and (info.server, info.token) == ("https://127.0.0.1:6443", "t")
