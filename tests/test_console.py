"""Worker output to a log file in the stage folder, and the live lines' content (workbench/console.py)."""

import json
import os
import subprocess
import sys

from workbench.console import describe, engine_log, last_metrics, readable

CHILD = """
import sys
from workbench.console import logged
def noisy(x):
    print("TRL step dict", flush=True)
    sys.stderr.write("Loading weights 100%\\n"); sys.stderr.flush()
    import os; os.system("echo from a child process")
    return x * 2
print("before")
print(logged(noisy, sys.argv[1], 21))
"""


def test_logged_sends_all_output_of_the_worker_to_its_log(tmp_path):
    log = tmp_path / "stage" / "train.log"
    out = subprocess.run([sys.executable, "-c", CHILD, str(log)], capture_output=True, text=True, timeout=120, check=False,
                         env={k: v for k, v in os.environ.items() if k != "RANK"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["before", "42"] and out.stderr == ""  # nothing leaked, output restored
    text = log.read_text()
    assert "TRL step dict" in text and "Loading weights 100%" in text and "from a child process" in text


def test_rank_above_zero_logs_beside_rank_zero(tmp_path):
    log = tmp_path / "train.log"
    out = subprocess.run([sys.executable, "-c", CHILD, str(log)], capture_output=True, text=True, timeout=120, check=False,
                         env={**os.environ, "RANK": "1"})
    assert out.returncode == 0 and not log.exists() and (tmp_path / "train-rank1.log").is_file()


def test_live_line_reads_the_last_metrics_row(tmp_path):
    path = tmp_path / "metrics.jsonl"
    assert last_metrics(path) is None and describe(None, 10, 1.0) == ("-", "starting", "-")
    rows = [{"step": s, "loss": 1.0 / s} for s in range(1, 5)] + [{"step": 5, "reward": 0.25}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"step": 6, "lo')  # a row being written
    assert last_metrics(path) == {"step": 5, "reward": 0.25}
    assert describe(last_metrics(path), 10, 50.0) == ("5/10", "reward 0.25", "50s")
    assert describe({"step": 3, "loss": 0.5}, None, 9.0) == ("3", "loss 0.5", "-")


ENGINE_CHILD = """
import os, sys
from workbench.console import send_output
print("driver side", flush=True)
send_output(sys.argv[1])
print("vLLM INFO line", flush=True)
sys.stderr.write("Loading weights 100%\\n"); sys.stderr.flush()
os.system("echo from the engine core")
"""


def test_send_output_moves_an_actor_process_and_its_children_to_the_log(tmp_path):
    log = tmp_path / "generate" / "engine.log"
    out = subprocess.run([sys.executable, "-c", ENGINE_CHILD, str(log)], capture_output=True, text=True,
                         timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["driver", "side"] and out.stderr == ""
    text = log.read_text()
    assert "vLLM INFO line" in text and "Loading weights 100%" in text and "from the engine core" in text
    assert engine_log(tmp_path, 0).name == "engine.log" and engine_log(tmp_path, 2).name == "engine-2.log"


def test_driver_summaries_stay_one_line_when_stdout_is_not_a_terminal():
    """rich wraps at 80 columns when stdout is a pipe or a file: the driver's consoles must not."""
    code = ("from workbench.pipeline import console as a; from workbench.train_stage import console as b; "
            "from data_gen.stages import console as c; from workbench.cli import console as d\n"
            "for con in (a, b, c, d): con.print('[green]✓[/] train/dft: ' + ', '.join(f'k{i}={i}' for i in "
            "range(60)) + ' (1.0s)')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert len(lines) == 4 and all(len(line) > 400 and line.startswith("✓ train/dft") for line in lines)


def test_readable_console_in_a_file(tmp_path):
    with open(tmp_path / "log.txt", "w") as f:
        readable(file=f).print("x " * 200)
    assert len((tmp_path / "log.txt").read_text().splitlines()) == 1


def test_local_ray_starts_without_the_token_notice_and_keeps_token_auth():
    code = ("import ray\nfrom workbench.console import quiet_local_ray\nquiet_local_ray()\n"
            "ray.init(num_cpus=1, include_dashboard=False)\n"
            "from ray._raylet import AuthenticationMode, get_authentication_mode\n"
            "print('token auth', get_authentication_mode() == AuthenticationMode.TOKEN)\nray.shutdown()")
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_AUTH_MODE", "RAY_ADDRESS")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False, env=env)
    assert out.returncode == 0, out.stderr
    assert "token auth True" in out.stdout  # Ray's default, unchanged
    assert "Token authentication" not in out.stdout + out.stderr
