"""`hookline nats-auth init DIR`: the NATS accounts and credentials of an install, as files, for a NATS
server hookline does not run (chart nats.url with nats.auth.existingSecret).

It writes what the operator would put into the auth Secret with the embedded server: the seeds
(operator, system account, account HOOKLINE and its signing key), each component's `.creds`, and
`auth.conf` for the server (`include` it, and add a full resolver block: docs/install.md). Files are
created readable by their owner only; nothing is printed but their names.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from hookline.sender.bus.natsaccounts import AuthKeys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["init"], help="init: make new keys and credentials")
    parser.add_argument("dir", type=Path, help="folder to write them to (must not exist or be empty)")


def run(args: argparse.Namespace) -> int:
    folder: Path = args.dir
    if folder.exists() and any(folder.iterdir()):
        print(f"error: {folder} is not empty; nats-auth init never overwrites keys", file=sys.stderr)
        return 2
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    for name, text in sorted(AuthKeys.generate().secret_files().items()):
        path = folder / name
        path.write_text(text)
        os.chmod(path, 0o600)
        print(path)
    print(
        f"kubectl create secret generic hookline-nats-creds --from-file={folder} -n <release namespace>\n"
        "then: helm ... --set nats.auth.existingSecret=hookline-nats-creds; the server includes auth.conf",
        file=sys.stderr,
    )
    return 0
