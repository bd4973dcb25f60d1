"""One run per run directory (workbench/lock.py)."""

import os
import platform
import signal
import subprocess
import sys
import time

import pytest

from workbench.lock import RunDirLocked, RunLock

HOLD = ("import sys, time; from pathlib import Path; from workbench.lock import RunLock\n"
        "lock = RunLock(Path(sys.argv[1]), command='holder').acquire()\n"
        "print('locked', flush=True); time.sleep(120)\n")


def hold_in_subprocess(root):
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(root)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_second_locker_is_refused_naming_directory_and_holder(tmp_path):
    holder = hold_in_subprocess(tmp_path)
    try:
        with pytest.raises(RunDirLocked) as err:
            RunLock(tmp_path).acquire()
        message = str(err.value)
        assert str(tmp_path) in message and f"pid {holder.pid} on host {platform.node()}" in message
        assert "\n" not in message
    finally:
        holder.kill()
        holder.wait()


def test_lock_of_a_killed_process_does_not_block(tmp_path):
    holder = hold_in_subprocess(tmp_path)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    assert (tmp_path / ".lock").read_text()  # the killed holder's record is still there
    with RunLock(tmp_path) as lock:
        assert lock.fd is not None
    with RunLock(tmp_path):  # released on exit: the next one gets it too
        pass


def test_lock_is_released_when_the_block_raises(tmp_path):
    with pytest.raises(ValueError), RunLock(tmp_path):
        raise ValueError("stage failed")
    t0 = time.time()
    RunLock(tmp_path).acquire().release()
    assert time.time() - t0 < 1
