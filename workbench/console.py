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

Engine actors (sampling for generate and evaluate, data_gen/engines.py) own their process for life, so
they call `send_output(<stage folder>/engine.log)` once, before their engine starts: transformers' loading
bars, vLLM's INFO lines and its engine-core subprocess (which inherits the descriptors) land there.
`readable()` is the driver's console: one line per summary however long (rich wraps at 80 columns when
stdout is not a terminal).
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


ENGINE_LOG = "engine.log"


def readable(**kwargs) -> Console:
    """The driver's console: prints never wrap (a summary stays one line in a log file or a pipe)."""
    return Console(soft_wrap=True, **kwargs)


def _point_output_at(path: Path) -> int:
    """dup2 a file (appended) over descriptors 1 and 2; returns its descriptor."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    print(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} pid {os.getpid()}", flush=True)
    return fd


@contextmanager
def output_to(path: Path):
    """Send this process's stdout and stderr (file descriptors 1 and 2) to `path` (appended)."""
    saved = os.dup(1), os.dup(2)
    fd = None
    try:
        fd = _point_output_at(path)
        yield Path(path)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for f in (fd, *saved):
            if f is not None:
                os.close(f)


def send_output(path: Path | str | None) -> None:
    """For the rest of this process (an actor owns its worker process), its stdout and stderr go to `path`,
    and to child processes it starts (vLLM's engine core). None: leave them where they are."""
    if path is not None:
        os.close(_point_output_at(path))


def engine_log(folder: Path | str, index: int) -> Path:
    """The log of engine actor `index` in a stage folder: engine.log, engine-1.log, ..."""
    return Path(folder) / (ENGINE_LOG if index == 0 else f"engine-{index}.log")


def quiet_local_ray() -> None:
    """Before `ray.init()` starts a local Ray: no token-authentication notice on the console.

    Ray 2.60 turns on token authentication for every new local cluster when RAY_AUTH_MODE is unset and
    logs a WARNING saying so, with the logger of ray/_private/authentication/authentication_token_setup.py
    (`enable_token_auth_by_default`). That logger only reports the authentication mode Ray chose (and, at
    INFO, where it saved a new token); raising it to ERROR changes nothing Ray does: the local cluster
    still uses a token, and a user's RAY_AUTH_MODE is still obeyed. (Setting RAY_AUTH_MODE=token here would
    not do: once `ray` is imported its C++ config has read the variable, and the driver and the GCS would
    disagree.)"""
    import logging

    logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)


def ensure_ray():
    """The `ray` module, with a local Ray started (quietly, no dashboard, workers' output not on the console)
    unless one is running already (the pipeline's, or a test's)."""
    import ray

    if not ray.is_initialized():
        quiet_local_ray()
        ray.init(include_dashboard=False, log_to_driver=False)
    return ray


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
