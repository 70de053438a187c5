"""Weight-file scratch directories in /dev/shm do not outlive their owner: a new one sweeps those whose process is
gone (a SIGKILLed rollout worker never cleans up, and /dev/shm is RAM), and leaves live owners' alone."""

from __future__ import annotations

import gc
import os
import subprocess
import sys

from rollout.scratch import owned_scratch_dir, sweep_stale


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_a_dead_owners_directory_is_swept_and_a_live_ones_kept(tmp_path):
    dead = tmp_path / f"mtr-weights-{_dead_pid()}-abc"
    live = tmp_path / f"mtr-weights-{os.getpid()}-def"
    foreign = tmp_path / "mtr-weights-nopid"  # an older name: not attributable, left alone
    for path in (dead, live, foreign):
        path.mkdir()
        (path / "weights-0.bin").write_bytes(b"x" * 1024)
    assert sweep_stale("mtr-weights-", tmp_path) == [dead]
    assert not dead.exists() and live.exists() and foreign.exists()


def test_a_scratch_dir_carries_its_pid_and_goes_with_its_owner(tmp_path):
    class Owner:
        pass

    owner = Owner()
    stale = tmp_path / f"mtr-adapters-{_dead_pid()}-zz"
    stale.mkdir()
    path = owned_scratch_dir("mtr-adapters-", owner, str(tmp_path))
    assert path.name.startswith(f"mtr-adapters-{os.getpid()}-") and path.is_dir()
    assert not stale.exists()  # swept on the way in
    del owner
    gc.collect()
    assert not path.exists()
