"""`hookline demo-receiver` as the in-cluster stand-in for a customer's server (examples/kind/): it
serves the ownership files someone placed in --files (and nothing else), checks each delivery's
signature with the key in --secret-file and prints one line per delivery."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from dataplane_helpers import SECRET, wait_until

from hookline.sender.bus.natsserver import free_port
from hookline.sender.model.signing import parse_secret, request_headers

OTHER_SECRET = "whsec_" + "A" * 43 + "="


@dataclass
class Running:
    base: str
    files: Path
    out: Path
    proc: subprocess.Popen[bytes]


@pytest.fixture
def receiver(tmp_path) -> Iterator[Running]:
    files = tmp_path / "files"
    files.mkdir()
    (tmp_path / "secret").write_text(SECRET + "\n")
    port = free_port()
    out = tmp_path / "out"
    command = [sys.executable, "-m", "hookline.cli", "demo-receiver", f"--listen=127.0.0.1:{port}"]
    command += [f"--files={files}", f"--secret-file={tmp_path / 'secret'}"]
    with open(out, "wb") as stdout:
        proc = subprocess.Popen(command, stdout=stdout, stderr=subprocess.PIPE)
    try:
        yield Running(f"http://127.0.0.1:{port}", files, out, proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


async def test_the_receiver_serves_placed_files_and_checks_signatures(receiver):
    base, files, out, proc = receiver.base, receiver.files, receiver.out, receiver.proc
    async with aiohttp.ClientSession() as http:
        for _ in range(300):
            try:
                async with http.get(f"{base}/hooks/hookline-0123.txt") as response:
                    assert response.status == 404  # not placed yet
                    break
            except aiohttp.ClientConnectionError:
                assert proc.poll() is None, proc.stderr.read()
                await asyncio.sleep(0.1)
        (files / "hookline-0123.txt").write_text("hookline-site-verification=abc\n")
        for path in ("/hooks/hookline-0123.txt", "/hookline-0123.txt"):  # next to the script, or the root
            async with http.get(f"{base}{path}") as response:
                assert (response.status, await response.text()) == (200, "hookline-site-verification=abc\n")
        (files / ".hidden").write_text("x")
        async with http.get(f"{base}/hooks/.hidden") as response:
            assert response.status == 404

        body = b'{"type":"open","id":"ev-1","recipient":"a@b.example","ip":"192.0.2.1"}'
        now = int(time.time())
        for event_id, key in (("ev-1", SECRET), ("ev-2", OTHER_SECRET)):
            headers = request_headers(event_id, now, "application/json", body, parse_secret(key))
            async with http.post(f"{base}/hooks/shop.php", data=body, headers=headers) as response:
                assert response.status == 200
    await wait_until(lambda: "ev-2" in out.read_text(), what="both deliveries printed")
    lines = out.read_text().splitlines()
    [good] = [line for line in lines if "id=ev-1" in line]
    [bad] = [line for line in lines if "id=ev-2" in line]
    assert "POST /hooks/shop.php  open" in good and "signature OK" in good
    assert "signature BAD" in bad
    assert "ownership file served" in out.read_text()
    proc.send_signal(signal.SIGTERM)
    for _ in range(600):
        if proc.poll() is not None:
            break
        await asyncio.sleep(0.05)
    assert proc.returncode == 0
