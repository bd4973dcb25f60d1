"""Worker output to a log file in the stage folder, and the live lines' content (workbench/console.py)."""

import json
import os
import subprocess
import sys

from workbench.console import describe, last_metrics

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
    out = subprocess.run([sys.executable, "-c", CHILD, str(log)], capture_output=True, text=True, timeout=120,
                         env={k: v for k, v in os.environ.items() if k != "RANK"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["before", "42"] and out.stderr == ""  # nothing leaked, output restored
    text = log.read_text()
    assert "TRL step dict" in text and "Loading weights 100%" in text and "from a child process" in text


def test_rank_above_zero_logs_beside_rank_zero(tmp_path):
    log = tmp_path / "train.log"
    out = subprocess.run([sys.executable, "-c", CHILD, str(log)], capture_output=True, text=True, timeout=120,
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
