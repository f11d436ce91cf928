"""wrk (a C HTTP benchmark client, Debian's package) as the ceiling of the sender's throughput rows.

The raw aiohttp client of bench/run.py is itself CPU-bound (~70-78 us per request, bench/profile_http.py),
so it caps its own row below what the receiver can take; wrk posts the same body with the same headers
at the same concurrency from one thread and leaves the receiver as the only limit. `ensure_wrk` finds it
or installs it: `apt-get install -y wrk` as root, else `apt-get download` of wrk and its LuaJIT library
unpacked into .tools/wrk (run with LD_LIBRARY_PATH); it says which.

    .venv/bin/python bench/wrk.py http://127.0.0.1:PORT/hooks/x   # one run against a running receiver
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOCAL = ROOT / ".tools" / "wrk"
_RATE = re.compile(r"Requests/sec:\s*([0-9.]+)")


def _local_binary() -> Path | None:
    binary = LOCAL / "usr" / "bin" / "wrk"
    return binary if binary.exists() else None


def _env_for(binary: str) -> dict[str, str]:
    env = dict(os.environ)
    if binary.startswith(str(LOCAL)):
        libs = [str(p) for p in (LOCAL / "usr" / "lib").glob("*-linux-gnu*")] + [str(LOCAL / "usr" / "lib")]
        env["LD_LIBRARY_PATH"] = ":".join([*libs, env.get("LD_LIBRARY_PATH", "")]).rstrip(":")
    return env


def _apt(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    return subprocess.run(["apt-get", *args], capture_output=True, text=True, env=env, check=False)


def ensure_wrk() -> tuple[str | None, str]:
    """(path of wrk or None, what was done to get it)."""
    found = shutil.which("wrk")
    if found:
        return found, f"wrk found at {found}"
    local = _local_binary()
    if local is not None:
        return str(local), f"wrk from {local} (unpacked earlier)"
    if shutil.which("apt-get") is None:
        return None, "wrk missing and no apt-get to install it: the wrk row is left out"
    if os.geteuid() == 0:
        if _apt("install", "-y", "wrk").returncode != 0:
            _apt("update")
            _apt("install", "-y", "wrk")
        found = shutil.which("wrk")
        if found:
            return found, "wrk installed by the bench (apt-get install -y wrk)"
        return None, "apt-get install -y wrk failed: the wrk row is left out"
    LOCAL.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="hookline-wrk-") as tmp:
        done = subprocess.run(
            ["apt-get", "download", "wrk", "libluajit-5.1-2", "libluajit-5.1-common"],
            cwd=tmp,
            capture_output=True,
            text=True,
            check=False,
        )
        for deb in Path(tmp).glob("*.deb"):
            subprocess.run(["dpkg-deb", "-x", str(deb), str(LOCAL)], check=False)
    local = _local_binary()
    if local is None:
        return None, f"apt-get download wrk failed ({done.stderr.strip()[:200]}): the wrk row is left out"
    return str(local), f"wrk downloaded by the bench (apt-get download wrk) and unpacked into {LOCAL}"


def lua_script(body: bytes, headers: Mapping[str, str]) -> str:
    """A wrk script posting `body` with `headers` (JSON string literals are valid Lua strings here)."""
    lines = ['wrk.method = "POST"', f"wrk.body = {json.dumps(body.decode())}"]
    lines += [f"wrk.headers[{json.dumps(name)}] = {json.dumps(value)}" for name, value in headers.items()]
    return "\n".join(lines) + "\n"


def run_wrk(
    binary: str,
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    *,
    connections: int,
    seconds: float,
    threads: int = 1,
) -> float:
    """wrk's own requests/s for `seconds` of POSTs of `body` with `headers` over `connections`."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", prefix="hookline-wrk-") as script:
        script.write(lua_script(body, headers))
        script.flush()
        command = [binary, f"-t{threads}", f"-c{connections}", f"-d{max(1, round(seconds))}s"]
        done = subprocess.run(
            [*command, "-s", script.name, url],
            capture_output=True,
            text=True,
            env=_env_for(binary),
            timeout=seconds + 60,
            check=False,
        )
    match = _RATE.search(done.stdout)
    if done.returncode != 0 or match is None:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stdout[-300:]} {done.stderr[-300:]}")
    return float(match.group(1))


def main(argv: list[str]) -> int:
    binary, how = ensure_wrk()
    print(how)
    if binary is None or not argv:
        return 0 if binary else 1
    rate = run_wrk(
        binary, argv[0], b'{"id":"x"}', {"Content-Type": "application/json"}, connections=32, seconds=3
    )
    print(f"{rate:.0f} requests/s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
