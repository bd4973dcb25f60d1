"""The train stage: every train entry of the recipe through `trainers/launch.py` (one Ray task, or a Ray Train
worker group of `num_workers` processes), side by side when resources allow.

Each task trains the same base model on the data set its trainer consumes (from the one build stage),
with the run's one template and seed, and records in its manifest the fingerprints of the base model and
of the data it consumed, its training tokens, wall time and its budget ledger row (`counts.ledger`,
workbench/budget.py: samples, generated / trained / forwarded tokens, FLOPs, wall time).
"""

from __future__ import annotations

import shutil
import time
from contextlib import contextmanager
from functools import partial
from pathlib import Path

from workbench.console import readable
from workbench.sweep import stage_entry
from workbench.trainers.base import TrainJob

console = readable()  # one line per message, also in a log file

# Which build file each kind of data lives in.
DATA_FILES = {
    "positives": "positives.parquet",
    "pairs": "pairs.parquet",
    "prompts": "rl_prompts.parquet",
    "demonstrations": "demonstrations.parquet",
}


def data_kind(trainer_cls, cfg) -> str:
    """The data set a trainer consumes: its class default, unless its config picks one (`data:`)."""
    return getattr(cfg, "data", None) or trainer_cls.consumes


@contextmanager
def writer_lock(out: Path, timeout_s: float = 120.0):
    """Rank 0 holds `flock` on `<in-progress folder>/.writer.lock` while it trains.

    After a kill -9 of the driver, the old training worker keeps running until it notices its dead raylet
    (about 2 s measured here) and may still write checkpoints; a rerun that resumes the same folder first
    waits here for that leftover writer to exit, so the two never write one folder at once.
    """
    import fcntl

    from workbench.rundir import WRITER_LOCK
    from workbench.trainers.checkpoint import rank_world

    if rank_world()[0] != 0:
        yield
        return
    out.mkdir(parents=True, exist_ok=True)
    with open(out / WRITER_LOCK, "w") as f:
        deadline = time.time() + timeout_s
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.time() > deadline:
                    raise RuntimeError(f"{out}: another training process is still writing this folder "
                                       f"after {timeout_s:.0f} s") from None
                time.sleep(0.2)
        yield


def train_entry(entry, template, base_model: str, build_dir: Path, out: Path, seed: int,
                report_to: tuple[str, ...] = (), verify=None) -> dict:
    """Train one recipe entry into `out`; return the counts for its manifest. Runs inside a Ray task.
    `report_to`: trackers besides metrics.jsonl (the recipe's run.report_to)."""
    import polars as pl

    from workbench.budget import count_parameters, ledger_row
    from workbench.models import model_fingerprint
    from workbench.registry import get_trainer
    from workbench.rundir import file_checksum, read_manifest
    from workbench.trainers.launch import worker_resources

    trainer_cls = get_trainer(entry.algorithm)
    kind = data_kind(trainer_cls, entry.config)
    data_path = Path(build_dir) / DATA_FILES[kind]
    if not data_path.is_file():
        raise FileNotFoundError(f"train/{entry.name}: {data_path} not found (the build stage writes it)")
    data = pl.read_parquet(data_path)
    if data.height == 0:
        raise ValueError(f"train/{entry.name}: {data_path} is empty: nothing to train {entry.algorithm} on")
    job = TrainJob(base_model=Path(base_model), data=data, template=template, out_dir=Path(out), seed=seed,
                   num_threads=max(1, int(worker_resources(entry)[0])), save_steps=entry.save_steps,
                   keep_checkpoints=entry.keep_checkpoints, report_to=tuple(report_to), name=entry.name,
                   **({"verifier": verify.verifier, "verifier_options": verify.options} if verify else {}))
    t0 = time.time()
    with writer_lock(Path(out)):
        result = trainer_cls().train(job, entry.config)
    counts = {
        "algorithm": entry.algorithm,
        "data": kind,
        "data_rows": data.height,
        "data_fingerprint": file_checksum(data_path),  # as the build manifest records it
        "base_model": str(base_model),
        "base_model_fingerprint": model_fingerprint(str(base_model)),
        "train_tokens": int(result.train_tokens),
        "steps": int(result.steps),
        "train_time_s": round(time.time() - t0, 3),
        "num_workers": entry.num_workers,
        **{k: v for k, v in result.extra.items() if isinstance(v, (int, float, str, bool))},
    }
    # the budget ledger (workbench/budget.py): the same units for every method, offline ones charged the generation
    generate = read_manifest(Path(build_dir).parent / "generate") if kind in ("positives", "pairs") else None
    counts["ledger"] = ledger_row(counts, entry.config, generate, count_parameters(base_model))
    return counts


def run_train_stages(pipeline, stages, base_model: str) -> dict[str, dict]:
    """Launch every train stage through `launch` (one Ray task, or a Ray Train worker group); commit each as
    it finishes; raise after all have ended. A killed stage's in-progress folder survives: the next run
    resumes it from its latest checkpoint (`save_steps`)."""
    import ray

    from workbench.console import LOG_NAME, TrainProgress, logged
    from workbench.registry import get_trainer
    from workbench.resources import check_disk, memory_kill, node_memory_gb, train_bytes, with_memory
    from workbench.trainers.checkpoint import latest_resumable
    from workbench.trainers.launch import launch, worker_resources

    recipe = pipeline.recipe
    build_dir = pipeline.rundir.path("build")
    running, failures, manifests = {}, [], {}
    node_gb, memory = node_memory_gb(), {}
    alone, retried = [], set()  # killed for memory: retried once, by itself, when nothing else runs

    def start(stage) -> None:
        entry = stage_entry(pipeline, stage)  # the recipe's entry, with a sweep trial's or chosen values
        entry, note = with_memory(entry, base_model, node_gb)  # Ray's `memory`: never co-scheduled past it
        memory[stage.name] = entry.memory_gb
        tmp = pipeline.rundir.begin(stage.name, stage.input_hash)  # kept if killed: resumed from its checkpoint
        fn = partial(logged, train_entry, tmp / LOG_NAME)  # the worker's output goes to its stage folder
        ref = launch(entry, fn, entry, recipe.template, base_model, build_dir, tmp,
                     stage.extra.get("seed", recipe.run.seed), tuple(recipe.run.report_to), recipe.verify,
                     out_dir=tmp, trainer_cls=get_trainer(entry.algorithm),
                     max_failures=recipe.ray.max_failures, placement=recipe.ray.placement)
        running[ref] = (stage, tmp, time.time())
        (cpus, gpus), found = worker_resources(entry), latest_resumable(tmp)
        console.print(f"[bold]train[/] {stage.name} queued ({entry.algorithm}, {entry.num_workers} x "
                      f"({cpus:g} CPU, {gpus:g} GPU, {entry.memory_gb:g} GiB{f'; {note}' if note else ''}))"
                      f"{f', resuming from step {found[0]}' if found else ''}")
        progress.add(stage.name, tmp, getattr(entry.config, "max_steps", None))

    check_disk(pipeline.rundir.root,  # refuse early: the model folders (and checkpoints) must fit
               [(s.name, train_bytes(stage_entry(pipeline, s), base_model)) for s in stages])
    with TrainProgress(console) as progress:  # one live line per running entry (terminals only)
        for stage in stages:
            start(stage)
        while running or alone:
            if not running:
                retried.add(alone[0].name)
                start(alone.pop(0))
            done, _ = ray.wait(list(running), num_returns=1, timeout=2.0)
            progress.refresh()
            if not done:
                continue
            stage, tmp, t0 = running.pop(done[0])
            progress.remove(stage.name)
            try:
                counts = ray.get(done[0])
            except Exception as exc:  # noqa: BLE001 - keep the others going; report all failures at the end
                pipeline.rundir.abort(tmp)
                if (killed := memory_kill(exc)) is not None:
                    had = f"reserved {memory[stage.name]:g} GiB; {killed}"
                    if stage.name not in retried:
                        alone.append(stage)
                        console.print(f"[yellow]![/] {stage.name} was killed for memory ({had}): it runs again "
                                      "alone once the others are done", highlight=False, soft_wrap=True)
                    else:
                        failures.append(f"{stage.name}: killed for memory twice, the second time alone ({had}); "
                                        f"set its memory_gb higher or lower its batch")
                        console.print(f"[red]✗[/] {failures[-1]}", highlight=False, soft_wrap=True)
                    continue
                cause = getattr(exc, "cause", None) or exc
                first = (str(cause).strip().splitlines() or [""])[0]
                failures.append(f"{stage.name}: {type(cause).__name__}: {first} (full output: {tmp / LOG_NAME})")
                console.print(f"[red]✗[/] {failures[-1]}", highlight=False, soft_wrap=True)
                continue
            manifests[stage.name] = pipeline.finish(stage, tmp, counts, time.time() - t0)
    if failures:
        raise RuntimeError("training failed for " + "; ".join(failures))
    return manifests


def train_now(recipe, entry, base_model: str, build_dir: Path, out: Path, seed: int) -> dict:
    """Train one entry into `out` through `launch` (a Ray task or worker group) and wait for its counts: a
    sweep's range-extension trial (workbench/sweep.py), trained inside its tune stage."""
    import ray

    from workbench.console import LOG_NAME, logged
    from workbench.registry import get_trainer
    from workbench.resources import memory_kill, node_memory_gb, with_memory
    from workbench.trainers.launch import launch

    entry, _ = with_memory(entry, base_model, node_memory_gb())
    Path(out).mkdir(parents=True, exist_ok=True)
    console.print(f"[bold]train[/] {out.name} of {entry.name} (range extension: "
                  f"{ {k: getattr(entry.config, k) for k in (entry.sweep or {})} })", highlight=False)
    t0 = time.time()
    ref = launch(entry, partial(logged, train_entry, Path(out) / LOG_NAME), entry, recipe.template, base_model,
                 build_dir, Path(out), seed, tuple(recipe.run.report_to), recipe.verify, out_dir=Path(out),
                 trainer_cls=get_trainer(entry.algorithm))
    try:
        counts = ray.get(ref)
    except Exception as exc:  # killed for memory: once more (nothing else of ours runs now)
        if memory_kill(exc) is None:
            raise
        console.print(f"[yellow]![/] {out.name} of {entry.name} was killed for memory; it runs once more",
                      highlight=False)
        shutil.rmtree(out, ignore_errors=True)
        Path(out).mkdir(parents=True)
        counts = ray.get(launch(entry, partial(logged, train_entry, Path(out) / LOG_NAME), entry, recipe.template,
                                base_model, build_dir, Path(out), seed, tuple(recipe.run.report_to), recipe.verify,
                                out_dir=Path(out), trainer_cls=get_trainer(entry.algorithm)))
    console.print(f"[green]✓[/] {entry.name} extension trial trained ({time.time() - t0:.1f}s)")
    return counts
