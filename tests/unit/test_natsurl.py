"""Where `hookline attempts` and `hookline redrive` find NATS: --nats-url, HOOKLINE_NATS_URL, the URL a
running `hookline dev` left in .hookline-dev/nats-url (saying so), the default; dev mode's file is
removed only when it still names that dev mode's NATS."""

from __future__ import annotations

import io

from hookline.sender.cmd.natsurl import (
    DEV_STATE_DIR,
    cli_nats_url,
    remove_dev_nats_url,
    write_dev_nats_url,
)
from hookline.sender.model.config import DEFAULT_NATS_URL, NATS_URL_ENV

DEV_URL = "nats://127.0.0.1:41234"


def resolve(tmp_path, given=None, environ=None) -> tuple[str, str]:
    err = io.StringIO()
    url = cli_nats_url(given, "attempts", environ=environ or {}, cwd=tmp_path, err=err)
    return url, err.getvalue()


def test_without_anything_the_default(tmp_path):
    assert resolve(tmp_path) == (DEFAULT_NATS_URL, "")


def test_dev_modes_file_is_used_and_said(tmp_path):
    path = write_dev_nats_url(tmp_path / DEV_STATE_DIR, DEV_URL)
    url, said = resolve(tmp_path)
    assert url == DEV_URL
    assert said.startswith(f"hookline attempts: using the NATS of hookline dev, {DEV_URL} (from {path};")


def test_the_flag_and_the_environment_come_before_the_file(tmp_path):
    write_dev_nats_url(tmp_path / DEV_STATE_DIR, DEV_URL)
    assert resolve(tmp_path, environ={NATS_URL_ENV: "nats://env:4222"}) == ("nats://env:4222", "")
    assert resolve(tmp_path, "nats://flag:4222", {NATS_URL_ENV: "nats://env:4222"}) == (
        "nats://flag:4222",
        "",
    )


def test_the_file_is_removed_only_while_it_names_this_dev_mode(tmp_path):
    state = tmp_path / DEV_STATE_DIR
    path = write_dev_nats_url(state, DEV_URL)
    write_dev_nats_url(state, "nats://127.0.0.1:5")  # a second dev mode in the same directory
    remove_dev_nats_url(state, DEV_URL)
    assert path.read_text().strip() == "nats://127.0.0.1:5"
    remove_dev_nats_url(state, "nats://127.0.0.1:5")
    assert not path.exists()
    remove_dev_nats_url(state, DEV_URL)  # nothing there: nothing to do
