"""One run per run directory: an exclusive lock held for the whole of `Pipeline.run`.

    with RunLock(Path("runs/smoke")):
        ...   # a second `workbench run` on runs/smoke exits at once naming this process

The lock is `flock` on `<run dir>/.lock` (POSIX advisory lock; on NFS the kernel maps it to an NFS lock,
so it also holds across the nodes of a cluster that share the run directory). The kernel drops it when
the holding process dies, however it dies (kill -9 included), so a lock left by a killed run never
blocks the next one. The file records the holder's pid, host and start time for the refusal message.
"""

from __future__ import annotations

import fcntl
import json
import os
import platform
import time
from pathlib import Path

LOCK_FILE = ".lock"


class RunDirLocked(RuntimeError):
    """Another live process is running in this run directory (one-line message)."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def describe_holder(path: Path) -> str:
    """`pid 123 on host h since 10:02:03 UTC` from a lock file, as far as it can be read."""
    try:
        info = json.loads(Path(path).read_text() or "{}")
    except (OSError, ValueError):
        info = {}
    if not info.get("pid"):
        return "another process (its pid is not recorded yet)"
    text = f"pid {info['pid']} on host {info.get('host', '?')}"
    if info.get("started_at"):
        text += f" since {info['started_at']}"
    if info.get("command"):
        text += f" ({info['command']})"
    if info.get("host") == platform.node() and not _pid_alive(int(info["pid"])):
        text += "; that pid has exited, so a child process it started still holds the lock"
    return text


class RunLock:
    """Exclusive, non-blocking lock of a run directory; raises RunDirLocked if another process has it."""

    def __init__(self, root: Path, command: str | None = None):
        self.root = Path(root)
        self.path = self.root / LOCK_FILE
        self.command = command
        self.fd: int | None = None

    def acquire(self) -> RunLock:
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)  # not inherited by child processes
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            holder = describe_holder(self.path)
            raise RunDirLocked(f"{self.root} is in use by another workbench run: {holder}; "
                               "wait for it to finish or stop it, or use another --out") from None
        info = {"pid": os.getpid(), "host": platform.node(), "command": self.command,
                "started_at": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is not None:
            os.ftruncate(self.fd, 0)  # the file stays (removing it would race with a waiting locker)
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
