"""The train stage: every train entry of the recipe as its own Ray task, side by side when resources allow.

Each task trains the same base model on the data set its trainer consumes (from the one build stage),
with the run's one template and seed, and records in its manifest the fingerprints of the base model and
of the data it consumed, its training tokens and wall time.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

from rich.console import Console

from workbench.trainers.base import TrainJob

console = Console()

# Which build file each kind of data lives in.
DATA_FILES = {
    "positives": "positives.parquet",
    "pairs": "pairs.parquet",
    "prompts": "rl_prompts.parquet",
    "demonstrations": "demonstrations.parquet",
}


def file_fingerprint(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def data_kind(trainer_cls, cfg) -> str:
    """The data set a trainer consumes: its class default, unless its config picks one (`data:`)."""
    return getattr(cfg, "data", None) or trainer_cls.consumes


def train_entry(entry, template, base_model: str, build_dir: Path, out: Path, seed: int) -> dict:
    """Train one recipe entry into `out`; return the counts for its manifest. Runs inside a Ray task."""
    import polars as pl

    from workbench.models import model_fingerprint
    from workbench.registry import get_trainer

    trainer_cls = get_trainer(entry.algorithm)
    kind = data_kind(trainer_cls, entry.config)
    data_path = Path(build_dir) / DATA_FILES[kind]
    if not data_path.is_file():
        raise FileNotFoundError(f"train/{entry.name}: {data_path} not found (the build stage writes it)")
    data = pl.read_parquet(data_path)
    if data.height == 0:
        raise ValueError(f"train/{entry.name}: {data_path} is empty: nothing to train {entry.algorithm} on")
    job = TrainJob(base_model=Path(base_model), data=data, template=template, out_dir=Path(out), seed=seed,
                   num_threads=max(1, int(entry.num_cpus)))
    t0 = time.time()
    result = trainer_cls().train(job, entry.config)
    return {
        "algorithm": entry.algorithm,
        "data": kind,
        "data_rows": data.height,
        "data_fingerprint": file_fingerprint(data_path),
        "base_model": str(base_model),
        "base_model_fingerprint": model_fingerprint(str(base_model)),
        "train_tokens": int(result.train_tokens),
        "steps": int(result.steps),
        "train_time_s": round(time.time() - t0, 3),
        **{k: v for k, v in result.extra.items() if isinstance(v, (int, float, str, bool))},
    }


def run_train_stages(pipeline, stages, base_model: str) -> dict[str, dict]:
    """Launch one Ray task per train stage; commit each as it finishes; raise after all have ended."""
    import ray

    recipe = pipeline.recipe
    build_dir = pipeline.rundir.path("build")
    running, failures, manifests = {}, [], {}
    for stage in stages:
        entry = recipe.train[stage.extra["entry_index"]]
        tmp = pipeline.rundir.begin(stage.name)
        task = ray.remote(num_cpus=entry.num_cpus, num_gpus=entry.num_gpus, max_retries=0)(train_entry)
        ref = task.remote(entry, recipe.template, base_model, build_dir, tmp, recipe.run.seed)
        running[ref] = (stage, tmp, time.time())
        console.print(f"[bold]train[/] {stage.name} queued ({entry.algorithm}, "
                      f"{entry.num_cpus:g} CPU, {entry.num_gpus:g} GPU)")
    while running:
        done, _ = ray.wait(list(running), num_returns=1)
        stage, tmp, t0 = running.pop(done[0])
        try:
            counts = ray.get(done[0])
        except Exception as exc:  # noqa: BLE001 - keep the others going; report all failures at the end
            pipeline.rundir.abort(tmp)
            cause = getattr(exc, "cause", None) or exc
            failures.append(f"{stage.name}: {type(cause).__name__}: {cause}".splitlines()[0])
            console.print(f"[red]✗[/] {failures[-1]}")
            continue
        manifests[stage.name] = pipeline.finish(stage, tmp, counts, time.time() - t0)
    if failures:
        raise RuntimeError("training failed for " + "; ".join(failures))
    return manifests
