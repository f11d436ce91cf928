"""Where the real Kubernetes binaries for tests are: etcd, kube-apiserver, kube-controller-manager.

Found the way controller-runtime's envtest finds them: a folder named by HOOKLINE_K8S_ASSETS or
KUBEBUILDER_ASSETS, else the unpacked archive in .tools/k8s, else the archive in ../shared/k8s-assets
(relative to the project root), unpacked into .tools/k8s on first use or by `make k8s-assets`, which
runs this file as a script (`python tests/support/kubeassets.py unpack`). controlplane.py runs them.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tarfile
import tempfile
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
UNPACKED = ROOT / ".tools" / "k8s"
ARCHIVE_DIR = ROOT.parent / "shared" / "k8s-assets"
BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager")
HOW_TO_GET = (
    "no Kubernetes test assets: set HOOKLINE_K8S_ASSETS to a folder with etcd, kube-apiserver and "
    "kube-controller-manager v1.36 (envtest's `setup-envtest use 1.36.x -p path` prints one with the first "
    f"two), or put k8s-assets-*.tar.xz in {ARCHIVE_DIR}"
)


def _complete(folder: Path) -> bool:
    return all(os.access(folder / name, os.X_OK) for name in BINARIES)


def archive() -> Path | None:
    """The newest k8s-assets archive in ../shared/k8s-assets, if there is one."""
    found = sorted(ARCHIVE_DIR.glob("k8s-assets-*.tar.xz")) if ARCHIVE_DIR.is_dir() else []
    return found[-1] if found else None


def assets_folder() -> Path | None:
    """A folder holding all three binaries, without unpacking anything (None: not here yet).
    HOOKLINE_K8S_ASSETS, when set, is the only place looked at; KUBEBUILDER_ASSETS is used when it
    holds all three (envtest's folders have no kube-controller-manager)."""
    named = os.environ.get("HOOKLINE_K8S_ASSETS", "").strip()
    if named:
        return Path(named) if _complete(Path(named)) else None
    envtest = os.environ.get("KUBEBUILDER_ASSETS", "").strip()
    if envtest and _complete(Path(envtest)):
        return Path(envtest)
    return UNPACKED if _complete(UNPACKED) else None


def _unpackable() -> Path | None:
    """The archive to unpack, unless HOOKLINE_K8S_ASSETS says to look nowhere else."""
    return None if os.environ.get("HOOKLINE_K8S_ASSETS", "").strip() else archive()


def available() -> bool:
    """Whether the tier can run: the binaries are there, or an archive to unpack them from."""
    return assets_folder() is not None or _unpackable() is not None


def unpack(source: Path, target: Path = UNPACKED) -> Path:
    """Unpack ``source`` (its top folder is k8s/) into ``target``: next to it first, then renamed, so
    two test runs starting at once never see half a binary."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".k8s-unpack-") as scratch:
        with tarfile.open(source, "r:xz") as tar:
            tar.extractall(scratch, filter="data")
        unpacked = Path(scratch) / "k8s"
        if not _complete(unpacked):
            raise RuntimeError(f"{source} does not hold k8s/{{{','.join(BINARIES)}}}")
        for name in BINARIES:  # newer than the archive, so make's target is up to date
            (unpacked / name).touch()
        if not _complete(target):
            with contextlib.suppress(FileNotFoundError):
                shutil.rmtree(target)
            with contextlib.suppress(OSError):  # another run renamed its copy first: use that one
                unpacked.rename(target)
    return target


def ensure_assets() -> Path:
    """The binaries' folder, unpacking the archive when that is all there is."""
    folder = assets_folder()
    if folder is not None:
        return folder
    source = _unpackable()
    if source is None:
        raise RuntimeError(HOW_TO_GET)
    return unpack(source)


def main(argv: Sequence[str]) -> int:
    if list(argv) != ["unpack"]:
        print("usage: kubeassets.py unpack", file=sys.stderr)
        return 2
    if assets_folder() is not None:
        print(f"k8s assets: {assets_folder()}")
        return 0
    source = _unpackable()
    if source is None:
        print(f"k8s assets: {HOW_TO_GET}")
        return 0
    print(f"k8s assets: {unpack(source)} (from {source})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
