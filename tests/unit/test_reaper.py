"""The reaper ends what a command started once the command is gone, even when it was SIGKILLed."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import psutil

from controller.cluster.reaper import descendants, reap

# A "command" that starts a child which starts a grandchild, prints their pids, and waits forever.
PARENT = textwrap.dedent(
    """
    import subprocess, sys, time
    child = subprocess.Popen([sys.executable, "-c",
        "import subprocess, sys, time; g = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)']);"
        "print(g.pid, flush=True); time.sleep(600)"], stdout=subprocess.PIPE, text=True)
    grandchild = child.stdout.readline().strip()
    print(child.pid, grandchild, flush=True)
    time.sleep(600)
    """
)


def _wait(condition, timeout_s):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def _gone(pid):
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_a_killed_commands_descendants_are_ended():
    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True)
    child, grandchild = map(int, parent.stdout.readline().split())
    reaper = subprocess.Popen([sys.executable, "-m", "controller.cluster.reaper", str(parent.pid), "0.1"])
    try:
        assert _wait(lambda: {child, grandchild} <= set(descendants(parent.pid)), 5)
        time.sleep(0.3)  # the reaper has recorded them
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
        assert _wait(lambda: _gone(child) and _gone(grandchild), 15), "the orphans outlived the reaper"
        assert reaper.wait(15) == 0
    finally:
        for pid in (child, grandchild):
            if not _gone(pid):
                os.kill(pid, signal.SIGKILL)
        parent.stdout.close()


def test_a_reused_pid_is_never_touched():
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        started = psutil.Process(bystander.pid).create_time()
        assert reap({bystander.pid: started - 100.0}, grace_s=0.5) == []  # recorded with another start time
        assert bystander.poll() is None
        assert reap({bystander.pid: started}, grace_s=2.0) == [bystander.pid]
        assert bystander.wait(5) is not None
    finally:
        if bystander.poll() is None:
            bystander.kill()
