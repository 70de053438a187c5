"""The replica's command line: refuses to expose itself by accident, writes its ready file atomically."""

from __future__ import annotations

import json
import os

import pytest

from simulator.main import _is_loopback, _write_ready_file, main


def test_non_loopback_host_needs_allow_remote(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["serve", "--host", "0.0.0.0"])
    assert exit_info.value.code == 2
    assert "--allow-remote" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("::1", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("10.0.0.5", False),
        ("example.org", False),
    ],
)
def test_loopback_detection(host, loopback):
    assert _is_loopback(host) is loopback


def test_bad_top_k_is_a_usage_error(capsys):
    with pytest.raises(SystemExit):
        main(["serve", "--top-k", "0"])
    assert "--top-k" in capsys.readouterr().err


def test_ready_file_holds_address_and_pid_and_no_temp_file_is_left(tmp_path):
    path = tmp_path / "sub" / "ready.json"
    _write_ready_file(path, "127.0.0.1:5555")
    assert json.loads(path.read_text()) == {"address": "127.0.0.1:5555", "pid": os.getpid()}
    assert os.listdir(path.parent) == ["ready.json"]
