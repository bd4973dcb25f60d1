"""Run an untrusted Python program so that it cannot hurt the machine (the code verifier's sandbox).

`mode: bwrap` (the default) runs it under bubblewrap:

    bwrap --ro-bind / / --tmpfs /tmp --proc /proc --dev /dev --unshare-all --die-with-parent
          --new-session --clearenv --chdir /tmp  python -I -S -

the whole filesystem read-only, a private size-capped tmpfs as the only writable place, new PID,
network, IPC, UTS and user namespaces (no network at all; other processes invisible and unkillable),
killed when we die. Inside it, `resource.setrlimit` caps CPU time, address space, open file size and
the number of processes (fork bombs). RLIMIT_NPROC counts every process of the real user and does not
bind uid 0, so when we are root the sandbox runs as a uid of its own, `SANDBOX_UID_BASE + our pid` (no
account; one per grading process, so parallel Ray tasks neither share a process budget nor see each
other), with the first interpreter that uid can start (this Python, else the system's `python3`;
standard library only, `-I -S`); otherwise the limit is what the user already runs plus `max_processes`. A wall-clock limit kills everything the program
started, and the PID namespace takes the rest with it: nothing is left behind.

`mode: rlimit` (only when a recipe accepts it explicitly) runs the same program with the same rlimits,
as the sandbox uid when we are root, in a fresh temporary folder that is deleted afterwards, but without
the namespaces: it can read what any user can read (as a non-root user: it runs as you, and can read and
write your files), write to world-writable places, and use the network. Without `bwrap` the default mode refuses to run.

The program comes on stdin; stdout and stderr go to unlinked temporary files capped by RLIMIT_FSIZE. Both
modes start it through `reaper.py`, a child subreaper that kills and reaps every process it started
(double forks and `setsid` included) once the program ends or its wall clock runs out.
"""

from __future__ import annotations

import glob
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Literal

from pydantic import Field

from workbench.config_base import Section

SANDBOX_UID_BASE = 1_000_000
REAPER = str(Path(__file__).with_name("reaper.py"))


class SandboxUnavailable(RuntimeError):
    """The requested sandbox cannot run here (bwrap missing or not permitted)."""


class SandboxConfig(Section):
    """Limits of one sandboxed run (the wall-clock limit is the verifier's timeout)."""

    sandbox: Literal["bwrap", "rlimit"] = Field(
        "bwrap", description="bwrap: namespaces + rlimits (refuses to run without bwrap); rlimit: rlimits only, "
        "for machines without bubblewrap, accepted explicitly (weaker, see data_gen/verifiers/sandbox.py).")
    cpu_s: int = Field(5, ge=1, description="CPU seconds per process (RLIMIT_CPU).")
    memory_mb: int = Field(1024, ge=64, description="Address space per process in MiB (RLIMIT_AS).")
    max_processes: int = Field(32, ge=4, description="Processes of the sandbox user (RLIMIT_NPROC; fork bombs).")
    file_mb: int = Field(16, ge=1, description="Largest file the program may write, stdout included (RLIMIT_FSIZE).")
    tmp_mb: int = Field(64, ge=1, description="Size of the private writable /tmp (bwrap mode).")
    python: str | None = Field(None, description="Interpreter run inside the sandbox (default: this Python).")


@dataclass
class RunResult:
    returncode: int | None  # None when killed by the wall-clock limit
    stdout: str
    stderr: str
    timed_out: bool
    wall_s: float

    @property
    def signal_name(self) -> str | None:
        """The signal that ended the program (bwrap reports a signalled child as exit 128 + signal)."""
        rc = self.returncode
        if rc is None or not (rc < 0 or 128 < rc < 128 + 65):
            return None
        try:
            return signal.Signals(-rc if rc < 0 else rc - 128).name
        except ValueError:
            return f"signal {-rc if rc < 0 else rc - 128}"


@cache
def bwrap_path() -> str | None:
    return shutil.which("bwrap")


def _candidates(cfg: SandboxConfig) -> list[str]:
    found = [cfg.python] if cfg.python else [sys.executable, shutil.which("python3") or "", "/usr/bin/python3"]
    return list(dict.fromkeys(p for p in found if p))


def _probe(cfg: SandboxConfig) -> tuple[str | None, str]:
    """(an interpreter that runs inside this sandbox, its version) or (None, why not); once per config."""
    return _probe_json(cfg.model_dump_json())


@cache
def _probe_json(cfg_json: str) -> tuple[str | None, str]:
    cfg = SandboxConfig.model_validate_json(cfg_json)
    if cfg.sandbox == "bwrap" and bwrap_path() is None:
        return None, "bwrap not found (Debian/Ubuntu: apt-get install bubblewrap)"
    why = "no Python interpreter found"
    for python in _candidates(cfg):
        try:
            res = _run(["-c", "import sys; print(sys.version.split()[0])"], python, "", cfg, 20)
        except OSError as exc:  # e.g. not executable by the sandbox user
            why = f"{python} does not start in the {cfg.sandbox} sandbox: {exc}"
            continue
        if res.returncode == 0:
            return python, res.stdout.strip()
        why = f"{python} does not start in the {cfg.sandbox} sandbox: " + \
              (res.stderr.strip().splitlines() or [f"exit {res.returncode}"])[-1][:200]
    return None, why


def describe(cfg: SandboxConfig) -> str:
    """The sandbox as a dataset card records it, e.g. `bwrap 0.8.0, python 3.11.2`."""
    python, ver = _probe(cfg)
    if python is None:
        return f"{cfg.sandbox} (unavailable: {ver})"
    if cfg.sandbox == "bwrap":
        out = subprocess.run([bwrap_path(), "--version"], capture_output=True, text=True, check=False).stdout.split()
        return f"bwrap {out[-1] if out else '?'}, python {ver}"
    return f"rlimit-only, python {ver}"


def _bwrap_args(tmp_mb: int) -> list[str]:
    return ["--ro-bind", "/", "/", "--size", str(tmp_mb * 2**20), "--tmpfs", "/tmp", "--proc", "/proc",
            "--dev", "/dev", "--unshare-all", "--die-with-parent", "--new-session", "--clearenv",
            "--setenv", "PATH", "/usr/local/bin:/usr/bin:/bin", "--setenv", "HOME", "/tmp",
            "--setenv", "LANG", "C.UTF-8", "--chdir", "/tmp"]


def sandbox_uid() -> int | None:
    """The uid this process's sandboxes run as: one of their own when we are root, else None (ours)."""
    return SANDBOX_UID_BASE + os.getpid() if os.geteuid() == 0 else None


def processes_of(uid: int) -> list[int]:
    """Pids whose real uid is `uid` (from /proc)."""
    pids = []
    for status in glob.glob("/proc/[0-9]*/status"):
        try:
            with open(status) as f:
                real = next(line.split()[1] for line in f if line.startswith("Uid:"))
        except (OSError, StopIteration, IndexError):
            continue
        if int(real) == uid:
            pids.append(int(status.split("/")[2]))
    return pids


def _limits(cfg: SandboxConfig, uid: int | None) -> list[tuple[int, int]]:
    mb = 2**20
    nproc = cfg.max_processes + (0 if uid is not None else len(processes_of(os.getuid())))
    return [(resource.RLIMIT_CPU, cfg.cpu_s), (resource.RLIMIT_AS, cfg.memory_mb * mb),
            (resource.RLIMIT_NPROC, nproc), (resource.RLIMIT_FSIZE, cfg.file_mb * mb), (resource.RLIMIT_CORE, 0)]


def check_sandbox(cfg: SandboxConfig) -> str:
    """The interpreter to run programs with; raise SandboxUnavailable when cfg's sandbox cannot run here."""
    python, why = _probe(cfg)
    if python is None:
        extra = " (to accept rlimit-only isolation set verify.options.sandbox: rlimit)" \
            if cfg.sandbox == "bwrap" else ""
        raise SandboxUnavailable(f"code verifier: {why}; refusing to run untrusted code{extra}")
    return python


def run_python(program: str, cfg: SandboxConfig, wall_s: float, max_output: int = 20_000) -> RunResult:
    """Run `program` with cfg's isolation; return within ~wall_s seconds, whatever the program does."""
    return _run(["-"], check_sandbox(cfg), program, cfg, wall_s, max_output)


def _read(f, limit: int) -> str:
    f.seek(0)
    return f.read(limit).decode("utf-8", errors="replace")


def _run(args: list[str], python: str, stdin: str, cfg: SandboxConfig, wall_s: float,
         max_output: int = 20_000, settle_s: float = 5.0) -> RunResult:
    """Run `python -I -S *args` in cfg's sandbox through the reaper (see reaper.py), stdin given."""
    uid = sandbox_uid()
    workdir = None
    if cfg.sandbox == "bwrap":
        argv, cwd, env = [bwrap_path(), *_bwrap_args(cfg.tmp_mb), python, "-I", "-S", *args], "/", {}
    else:
        workdir = tempfile.mkdtemp(prefix="wb-sandbox-")
        if uid is not None:
            os.chown(workdir, uid, uid)
        argv, cwd = [python, "-I", "-S", *args], workdir
        env = {"PATH": "/usr/bin:/bin", "HOME": workdir, "TMPDIR": workdir, "LANG": "C.UTF-8"}
    spec = {"argv": argv, "cwd": cwd, "env": env, "limits": _limits(cfg, uid), "uid": uid, "wall_s": wall_s,
            "settle_s": settle_s}
    # The outer deadline (SIGALRM) must not interrupt us between start and cleanup: the wall-clock limit
    # is the authority here, and a pending alarm is delivered once we return.
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
    start = time.monotonic()
    status_r, status_w = os.pipe()
    try:
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            reaper = subprocess.Popen([sys.executable, "-I", "-S", REAPER, json.dumps(spec), str(status_w)],
                                      stdin=subprocess.PIPE, stdout=out, stderr=err, pass_fds=(status_w,))
            os.close(status_w)
            status_w = None
            try:
                reaper.communicate(stdin.encode(), timeout=wall_s + 2 * settle_s + 10)
            except subprocess.TimeoutExpired:  # the reaper itself stuck: should not happen
                reaper.kill()
                reaper.wait()
            with os.fdopen(status_r) as f:
                status_r = None
                raw = f.read()
            if not raw:  # the launcher itself failed: a verifier error (status=error), never a grade
                raise RuntimeError(f"sandbox launcher failed: {_read(err, max_output).strip()[-300:]}")
            status = json.loads(raw)
            if "error" in status:
                raise OSError(f"cannot start {argv[0]}: {status['error']}")
            return RunResult(status["returncode"], _read(out, max_output), _read(err, max_output),
                             status["timed_out"], time.monotonic() - start)
    finally:
        for fd in (status_r, status_w):
            if fd is not None:
                os.close(fd)
        if workdir:
            shutil.rmtree(workdir, ignore_errors=True)
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
