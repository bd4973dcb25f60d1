"""A console a person can read: workers write to log files in their stage folder, the driver shows one
live line per running train entry (step, loss or reward, elapsed time, ETA) above the one-line summaries.

    launch(entry, partial(logged, train_entry, tmp / "train.log"), ...)   # the worker's full output
    with TrainProgress() as progress:                                      # the live lines
        progress.add("train/dft", tmp, max_steps=100)
        ...; progress.refresh()

`logged` points the process's file descriptors 1 and 2 at the log (TRL's per-step dicts, progress bars,
warnings of every library, C extensions included), so none of it reaches Ray's driver output; a failure
message names the log. The live lines read each entry's metrics.jsonl (the trainers' own log) and are
drawn only on a terminal: captured output (CI, `| tee`) keeps the summaries alone.
"""

from __future__ import annotations

import json
import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from rich.console import Console
from rich.live import Live
from rich.table import Table

LOG_NAME = "train.log"


@contextmanager
def output_to(path: Path):
    """Send this process's stdout and stderr (file descriptors 1 and 2) to `path` (appended)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        print(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} pid {os.getpid()}", flush=True)
        yield path
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for f in (fd, *saved):
            os.close(f)


def logged(fn, log_path, *args, **kwargs):
    """`fn(*args, **kwargs)` with the process's output in `log_path` (rank r > 0 of a worker group: in
    `<stem>-rank<r>.log` beside it). Picklable through functools.partial, so Ray can ship it."""
    rank = int(os.environ.get("RANK", "0") or 0)
    path = Path(log_path)
    if rank:
        path = path.with_name(f"{path.stem}-rank{rank}{path.suffix}")
    with output_to(path):
        return fn(*args, **kwargs)


def last_metrics(path: Path) -> dict | None:
    """The last complete row of a metrics.jsonl, reading only its end."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 8192))
            lines = f.read().splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        try:
            return json.loads(line)
        except ValueError:
            continue
    return None


def describe(row: dict | None, max_steps: int | None, elapsed: float) -> tuple[str, str, str]:
    """(step, metric, eta) cells of one entry's live line."""
    if not row:
        return "-", "starting", "-"
    step = int(row.get("step", 0))
    numeric = [k for k in ("loss", "reward", "rewards", "mean_reward") if isinstance(row.get(k), (int, float))]
    key = numeric[0] if numeric else None
    metric = f"{key} {row[key]:.4g}" if key else ""
    eta = "-"
    if max_steps and step > 0:
        eta = f"{(max_steps - step) * elapsed / step:.0f}s"
    return f"{step}/{max_steps}" if max_steps else str(step), metric, eta


class TrainProgress:
    """One live line per running train entry, drawn while the block runs (terminals only)."""

    def __init__(self, console: Console | None = None):
        self.console = console or Console()
        self.entries: dict[str, tuple[Path, int | None, float]] = {}
        self.live = Live(console=self.console, transient=True, auto_refresh=False)

    def add(self, name: str, folder: Path, max_steps: int | None = None) -> None:
        self.entries[name] = (Path(folder), max_steps if max_steps and max_steps > 0 else None, time.time())
        self.refresh()

    def remove(self, name: str) -> None:
        self.entries.pop(name, None)
        self.refresh()

    def table(self) -> Table:
        table = Table(box=None, show_header=False, pad_edge=False)
        for name, (folder, max_steps, t0) in self.entries.items():
            elapsed = time.time() - t0
            step, metric, eta = describe(last_metrics(folder / "metrics.jsonl"), max_steps, elapsed)
            table.add_row(f"[bold]{name}[/]", f"step {step}", metric, f"{elapsed:.0f}s", f"ETA {eta}")
        return table

    def refresh(self) -> None:
        if self.console.is_terminal:
            self.live.update(self.table(), refresh=True)

    def __enter__(self) -> TrainProgress:
        if self.console.is_terminal:
            self.live.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.console.is_terminal:
            self.live.stop()
