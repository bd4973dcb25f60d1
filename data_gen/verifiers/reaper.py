"""The sandbox's launcher: start one untrusted program, enforce its wall clock, and leave nothing behind.

Run as a script (`python -I -S reaper.py SPEC_JSON STATUS_FD`, standard library only) by
`data_gen/verifiers/sandbox.py`, never imported. It makes itself a child subreaper (prctl
PR_SET_CHILD_SUBREAPER), so every process the program starts is re-parented to it rather than to the
machine's init when its parent dies; starts the program in a new session with the rlimits and user of
SPEC; waits at most `wall_s`; then kills every process below itself and reaps them all (zombies
included: they would count against RLIMIT_NPROC of the next run), and writes
`{"returncode": int | null, "timed_out": bool}` to STATUS_FD (`{"error": ...}` when it cannot start). stdin, stdout and stderr pass through.
"""

import ctypes
import glob
import json
import os
import resource
import signal
import subprocess
import sys
import time

PR_SET_CHILD_SUBREAPER = 36


def descendants() -> list[int]:
    out, todo = [], [os.getpid()]
    while todo:
        pid = todo.pop()
        for path in glob.glob(f"/proc/{pid}/task/*/children"):
            try:
                with open(path) as f:
                    kids = [int(k) for k in f.read().split()]
            except OSError:
                continue
            out += kids
            todo += kids
    return out


def reap_all(settle_s: float) -> None:
    """Kill and reap every process below us until there is none (or settle_s has passed)."""
    deadline = time.monotonic() + settle_s
    while time.monotonic() < deadline:
        for pid in descendants():
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        try:
            while os.waitpid(-1, os.WNOHANG)[0]:
                pass
        except ChildProcessError:
            return  # no children left at all
        time.sleep(0.005)


def main() -> None:
    spec = json.loads(sys.argv[1])
    status = os.fdopen(int(sys.argv[2]), "w")
    signal.pthread_sigmask(signal.SIG_SETMASK, [])  # the caller blocks SIGALRM; the program should not
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)

    def limits():
        for which, value in spec["limits"]:
            resource.setrlimit(which, (value, value))

    user = {"user": spec["uid"], "group": spec["uid"], "extra_groups": []} if spec["uid"] is not None else {}
    try:
        proc = subprocess.Popen(spec["argv"], cwd=spec["cwd"], env=spec["env"], start_new_session=True,
                                preexec_fn=limits, **user)  # noqa: PLW1509 - this launcher has one thread
    except OSError as exc:  # e.g. the interpreter is not executable by the sandbox uid
        status.write(json.dumps({"error": f"{type(exc).__name__}: {exc}"}))
        status.close()
        return
    try:
        returncode, timed_out = proc.wait(timeout=spec["wall_s"]), False
    except subprocess.TimeoutExpired:
        returncode, timed_out = None, True
    reap_all(spec["settle_s"])
    status.write(json.dumps({"returncode": returncode, "timed_out": timed_out}))
    status.close()


if __name__ == "__main__":
    main()
