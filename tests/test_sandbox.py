"""The code verifier's sandbox: correct, wrong, crashing and hostile programs, each graded within its limit,
nothing changed outside the sandbox and nothing left running or lying in the temporary area."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from data_gen.verifiers import sandbox
from data_gen.verifiers.base import VerifierError, grade_many
from data_gen.verifiers.code import CodeVerifier, extract_program
from data_gen.verifiers.sandbox import SandboxConfig, run_python

TESTS = "assert double(2) == 4\nassert double(-3) == -6\n"
GOOD = "```python\ndef double(x):\n    return 2 * x\n```"
WALL_S = 2.0


def hostile(body: str) -> str:
    """A response whose program defines a correct `double` and then does `body` at import time."""
    return f"```python\ndef double(x):\n    return 2 * x\n\n{body}\n```"


HOSTILE = {
    "infinite loop": hostile("while True:\n    pass"),
    "sleep forever": hostile("import time\ntime.sleep(3600)"),
    "fork bomb": hostile("import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass"),
    "memory bomb": hostile("blocks = []\nwhile True:\n    blocks.append(bytearray(50 * 2**20))"),
    "write outside tmp": hostile("open({target!r}, 'w').write('pwned')"),
    "kill other processes": hostile("import os, signal\nos.kill({victim}, signal.SIGKILL)\n"
                                    "os.kill(-1, signal.SIGKILL)"),
    "daemon left behind": hostile("import os, time\nif os.fork() == 0:\n    os.setsid()\n    time.sleep(3600)\n"
                                  "raise SystemExit(3)"),
    "output flood": hostile("import sys\nwhile True:\n    sys.stdout.write('x' * 65536)"),
    "fake success": hostile("import os\nos._exit(0)"),
    "litter tmp": hostile("open('/tmp/wb-hostile-litter', 'w').write('x')\nraise SystemExit(1)"),
}


def sandbox_processes() -> list[int]:
    """Processes left by our sandboxes: of the sandbox uid (as root), or below us."""
    if sandbox.sandbox_uid() is not None:
        return sandbox.processes_of(sandbox.sandbox_uid())
    out = subprocess.run(["ps", "-o", "pid=,comm=", "--ppid", str(os.getpid())], capture_output=True,
                         text=True, check=False).stdout
    return [line for line in out.splitlines() if line.strip() and "ps" not in line]


def our_tmp_entries() -> set[str]:
    """What the sandbox (wb-sandbox-*, rlimit mode) or a hostile program (wb-hostile-*) left in /tmp."""
    return {p.name for p in Path("/tmp").iterdir() if p.name.startswith(("wb-sandbox-", "wb-hostile-"))}


TIMEOUTS = {"infinite loop", "sleep forever", "fork bomb"}  # the others end on their own, wrong
RLIMIT_CASES = ["fork bomb", "memory bomb", "daemon left behind"]


def _mode(name: str) -> str:
    if name == "bwrap" and sandbox.bwrap_path() is None:
        pytest.skip("bwrap not installed (apt-get install bubblewrap)")
    return name


@pytest.fixture
def victim():
    """A process of ours that hostile programs try to kill."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    yield proc
    proc.kill()
    proc.wait()


def test_extract_program():
    assert "def double" in extract_program("Here:\n```python\nprint(1)\n```\nand\n```py\ndef double(x): ...\n```")
    assert extract_program("```\nx = 1\n```") == "x = 1\n"
    assert extract_program("def f():\n    return 1") == "def f():\n    return 1"
    assert extract_program("The answer is 42.") is None
    assert extract_program("```bash\nrm -rf /\n```") is None


@pytest.mark.parametrize("response,correct,status,pred", [
    (GOOD, True, "ok", "passed"),
    ("```python\ndef double(x):\n    return x + 1\n```", False, "ok", "failed: AssertionError"),
    ("```python\ndef double(x):\n    return 1 / 0\n```", False, "ok", "failed: ZeroDivisionError"),
    ("```python\ndef double(x) return\n```", False, "ok", "failed: SyntaxError"),
    ("I cannot solve this.", False, "no_answer", None),
])
def test_correct_wrong_crashing(response, correct, status, pred):
    g = grade_many(CodeVerifier({"sandbox": _mode("bwrap")}), [response], [TESTS], WALL_S)[0]
    assert (g.correct, g.status, g.pred) == (correct, status, pred)


@pytest.mark.parametrize("mode,name", [("bwrap", n) for n in HOSTILE] + [("rlimit", n) for n in RLIMIT_CASES])
def test_hostile_programs_graded_wrong_and_contained(mode, name, victim, tmp_path):
    _mode(mode)
    target = tmp_path / "outside.txt"  # a host folder the sandbox must not write to
    tmp_path.chmod(0o777)  # so that only the sandbox (not file permissions alone) stops the write
    response = HOSTILE[name].format(target=str(target), victim=victim.pid)
    before = our_tmp_entries()
    start = time.monotonic()
    g = grade_many(CodeVerifier({"sandbox": mode, "memory_mb": 256}), [response], [TESTS], WALL_S)[0]
    elapsed = time.monotonic() - start
    # the others end on their own (status ok), unless a loaded machine let the wall clock pass first
    expected = "timeout" if name in TIMEOUTS or elapsed >= WALL_S else "ok"
    assert not g.correct and g.status == expected, g
    assert elapsed < WALL_S + 4, f"{name}: took {elapsed:.1f}s"
    assert victim.poll() is None, "the sandboxed program killed a process outside the sandbox"
    if mode == "bwrap":
        assert not target.exists(), "the sandboxed program wrote outside /tmp"
        assert our_tmp_entries() <= before, "files left behind in /tmp"
    else:  # rlimit-only mode cannot stop writes to world-writable places (documented); its workdir goes
        assert not any(name.startswith("wb-sandbox-") for name in our_tmp_entries() - before)
        Path("/tmp/wb-hostile-litter").unlink(missing_ok=True)
    assert sandbox_processes() == [], "processes left behind"


def test_cpu_limit_without_wall_clock():
    """A process that burns CPU is stopped by RLIMIT_CPU even when the wall clock is generous."""
    start = time.monotonic()
    res = run_python("while True: pass", SandboxConfig(sandbox=_mode("bwrap"), cpu_s=1), wall_s=30)
    assert time.monotonic() - start < 10 and not res.timed_out and res.signal_name in ("SIGXCPU", "SIGKILL")
    assert sandbox_processes() == []


def test_refuses_without_bwrap_unless_rlimit_accepted(monkeypatch):
    monkeypatch.setattr(sandbox, "bwrap_path", lambda: None)
    sandbox._probe_json.cache_clear()
    try:
        with pytest.raises(VerifierError, match="bwrap not found.*sandbox: rlimit"):
            grade_many(CodeVerifier(), [GOOD], [TESTS], WALL_S)
        g = grade_many(CodeVerifier({"sandbox": "rlimit"}), [GOOD], [TESTS], WALL_S)[0]
        assert g.correct and "rlimit-only" in CodeVerifier({"sandbox": "rlimit"}).version()
    finally:
        sandbox._probe_json.cache_clear()
