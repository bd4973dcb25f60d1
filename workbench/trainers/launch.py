"""The one door every train entry goes through: one Ray task, or a Ray Train worker group of N processes.

    ref = launch(entry, train_fn, *args, out_dir=tmp)   # an ObjectRef of train_fn's return value on rank 0

- `num_workers: 1` (the default) runs `train_fn` in one Ray task with `cpus_per_worker` / `gpus_per_worker`
  (default: the entry's `num_cpus` / `num_gpus`).
- `num_workers: N > 1` runs it in every worker of a Ray Train `TorchTrainer` (Ray's docs: "Get started with
  PyTorch", ray.train.torch), which initialises torch.distributed (NCCL on GPUs, gloo on CPU) and sets
  RANK / LOCAL_RANK / WORLD_SIZE, so our SFT-family loop shards the model with FSDP2 (`shard`) and the
  transformers/TRL trainers run DDP through accelerate inside the workers.

One process drives one GPU: an entry asking for more than one GPU per worker is refused (the SFT loop would
leave the rest idle and the transformers Trainer would wrap the model in `nn.DataParallel`, multiplying
the recipe's batch). A trainer that does not declare `distributed = True` refuses N > 1 workers.
On a cluster the run directory must be one storage every node sees: `probe_storage` checks it from each node.

Healing: a worker group runs under Ray Train's `FailureConfig(max_failures=N)` (the recipe's
`ray.max_failures`): when a worker dies or raises, Ray Train replaces the group and runs the training
function again, which resumes from the stage's latest checkpoint (`save_steps`, checkpoint.py). Every
(re)start cuts metrics.jsonl back to that checkpoint (`checkpoint.restart_metrics`) and appends a row to
`.attempts.jsonl` in the stage folder; the result (the stage's manifest counts) carries `restarts` (within this
run) and `attempts` (each start, also of earlier killed runs, with the step it resumed from, its node and
time). A 1-worker entry is a plain Ray task and does not heal inside the run (a rerun resumes it).
Ray task and actor names say which entry they serve: `train/<entry>`, `train/<entry> (worker group)`.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import uuid
from pathlib import Path

RESULT_FILE = ".launch-result.json"
ATTEMPTS_FILE = ".attempts.jsonl"  # one row per start of a worker group: {"group", "resumed_from_step", ...}


def worker_resources(entry) -> tuple[float, float]:
    """(CPUs, GPUs) one worker reserves: the per-worker fields, else the entry's num_cpus / num_gpus."""
    cpus = entry.cpus_per_worker if entry.cpus_per_worker is not None else entry.num_cpus
    gpus = entry.gpus_per_worker if entry.gpus_per_worker is not None else entry.num_gpus
    return float(cpus), float(gpus)


def check_entry(entry, trainer_cls) -> tuple[str, str] | None:
    """(field, one-line reason) if this entry cannot launch as asked, else None."""
    gpus = worker_resources(entry)[1]
    field = "gpus_per_worker" if entry.gpus_per_worker is not None else "num_gpus"
    if gpus > 1:
        return field, (f"{gpus:g} GPUs in one process would leave {gpus - 1:g} idle (one process drives one GPU): "
                       f"set num_workers: {entry.num_workers * math.ceil(gpus)} and gpus_per_worker: 1")
    if entry.num_workers > 1:
        if not getattr(trainer_cls, "distributed", False):
            return "num_workers", f"{trainer_cls.name}: num_workers > 1 is not supported yet"
        if 0 < gpus < 1:
            return field, "with num_workers > 1 each worker needs a whole GPU (NCCL runs one rank per GPU)"
    if entry.save_steps and not getattr(trainer_cls, "checkpoints", False):
        return "save_steps", f"{trainer_cls.name}: save_steps (resumable checkpoints) is not supported yet"
    if getattr(entry, "config", None) is not None and hasattr(trainer_cls, "check_launch"):  # e.g. GRPO's split
        return trainer_cls.check_launch(entry.config, entry.num_workers, entry.save_steps)
    return None


def launch(entry, train_fn, *args, out_dir: Path, trainer_cls=None, max_failures: int = 0,
           placement: str = "PACK"):
    """Start `train_fn(*args)` as the entry asks; return an ObjectRef of rank 0's return value.
    `max_failures`: times Ray Train restarts a worker group that lost a worker (-1: always);
    `placement`: the group's placement strategy (PACK fills a node first, SPREAD uses different nodes)."""
    import ray

    if trainer_cls is not None and (problem := check_entry(entry, trainer_cls)):
        raise ValueError(f"train/{entry.name}: {problem[0]}: {problem[1]}")
    cpus, gpus = worker_resources(entry)
    memory = int(entry.memory_gb * 2**30) if getattr(entry, "memory_gb", None) else 0  # Ray's `memory`, bytes
    if entry.num_workers == 1:
        task = ray.remote(num_cpus=cpus, num_gpus=gpus, memory=memory or None, max_retries=0)(_single)
        return task.options(name=f"train/{entry.name}").remote(train_fn, args, str(out_dir))
    group = ray.remote(num_cpus=0, max_retries=0)(_fit_group)  # waits on the worker group; holds nothing
    return group.options(name=f"train/{entry.name} (worker group)").remote(
        train_fn, args, entry.num_workers, cpus, gpus, str(out_dir), entry.name, memory, max_failures, placement)


def _single(train_fn, args, out_dir: str | None = None):
    import torch

    from workbench.trainers.checkpoint import restart_metrics

    if torch.cuda.device_count() > 1:  # Ray gives a task its own GPUs; never let one process see several
        raise RuntimeError(f"one training process sees {torch.cuda.device_count()} GPUs (the transformers Trainer "
                           "would wrap the model in nn.DataParallel): give the entry gpus_per_worker: 1 and "
                           "num_workers: N, one process per GPU")
    if out_dir is not None:
        restart_metrics(Path(out_dir))
    return train_fn(*args)


def _fit_group(train_fn, args, num_workers: int, cpus: float, gpus: float, out_dir: str, name: str,
               memory: int = 0, max_failures: int = 0, placement: str = "PACK"):
    """Run train_fn in every worker of a TorchTrainer (restarted up to `max_failures` times); return rank 0's
    result with the group's restarts and attempts; re-raise a worker's error once no restart is left."""
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    out = Path(out_dir)
    storage = out / ".ray-train"
    group = uuid.uuid4().hex[:8]
    resources = {"CPU": cpus, **({"GPU": gpus} if gpus else {}), **({"memory": memory} if memory else {})}
    trainer = TorchTrainer(
        _worker_loop, train_loop_config={"fn": train_fn, "args": args, "out": out_dir, "group": group},
        scaling_config=ScalingConfig(num_workers=num_workers, use_gpu=gpus > 0, resources_per_worker=resources,
                                     placement_strategy=placement),
        run_config=RunConfig(name=f"train-{name.replace('/', '-')}-{group}", storage_path=str(storage),
                             failure_config=FailureConfig(max_failures=max_failures)),
    )
    try:
        trainer.fit()
    except Exception as exc:  # surface the first worker's own exception, not Ray's wrapper
        failures = getattr(exc, "worker_failures", None)
        if failures:
            first = failures[min(failures)]
            raise getattr(first, "cause", None) or first from None
        raise
    finally:
        shutil.rmtree(storage, ignore_errors=True)
    result = json.loads((out / RESULT_FILE).read_text())
    (out / RESULT_FILE).unlink()
    attempts = read_attempts(out)
    (out / ATTEMPTS_FILE).unlink(missing_ok=True)
    mine = [a for a in attempts if a["group"] == group]
    if not isinstance(result, dict):
        return result
    return {**result, "restarts": max(0, len(mine) - 1), "attempts": attempts}


def read_attempts(stage_dir: Path) -> list[dict]:
    """Every recorded start of a worker group in this stage folder (earlier killed runs' included), in order."""
    path = Path(stage_dir) / ATTEMPTS_FILE
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _worker_loop(config: dict) -> None:
    import time

    import ray
    import ray.train

    from workbench.trainers.checkpoint import restart_metrics

    ctx = ray.train.get_context()
    if ctx.get_world_rank() == 0:  # a (re)start: cut the log back to the checkpoint it resumes from, record it
        out = Path(config["out"])
        step = restart_metrics(out)
        row = {"group": config["group"], "resumed_from_step": step, "at": round(time.time(), 3),
               "node": ray.get_runtime_context().get_node_id()[:8]}
        with open(out / ATTEMPTS_FILE, "a") as f:
            f.write(json.dumps(row) + "\n")
    result = config["fn"](*config["args"])
    if ctx.get_world_rank() == 0:
        path = Path(config["out"]) / RESULT_FILE
        path.write_text(json.dumps(result, default=str))


# --- inside a worker ---------------------------------------------------------------------------------------


def worker_device():
    """This process's device: cuda:LOCAL_RANK when it has a GPU, else the CPU."""
    import torch

    if not torch.cuda.is_available():
        return torch.device("cpu")
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    torch.cuda.set_device(device)
    return device


def shard(model, layers_of=None) -> None:
    """FSDP2: `fully_shard` each decoder layer (the `_no_split_modules` classes of `layers_of`, default the
    model: a wrapper such as PPO's critic names its transformer), then the root, so parameters, gradients and
    optimizer states are split across the workers (PyTorch FSDP2 tutorial)."""
    from torch.distributed.fsdp import fully_shard

    layer_classes = set(getattr(layers_of or model, "_no_split_modules", None) or [])
    layers = [m for m in model.modules() if type(m).__name__ in layer_classes]
    if not layers:
        raise ValueError(f"FSDP: found no decoder layers ({sorted(layer_classes)}) in {type(model).__name__}")
    for layer in layers:
        fully_shard(layer)
    fully_shard(model)


def all_sum(values):
    """Sum numbers (a tuple of floats, ints and dicts of them) over the workers; unchanged with one process.
    float64 on the wire, so token counts and loss sums come back exact enough to log."""
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return values
    flat = [x for v in values for x in (v.values() if isinstance(v, dict) else [v])]
    t = torch.tensor([float(x) for x in flat], dtype=torch.float64)
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t)
    it = iter(t.tolist())

    def cast(like, x):
        return round(x) if isinstance(like, int) else x

    return tuple({k: cast(x, next(it)) for k, x in v.items()} if isinstance(v, dict) else cast(v, next(it))
                 for v in values)


def scalar(t) -> float:
    """A float from a tensor that may be an FSDP2 DTensor (e.g. the gradient norm)."""
    return float(t.full_tensor() if hasattr(t, "full_tensor") else t)


def split_batch(items: list, rank: int, world: int, micro: int) -> tuple[list[list], int]:
    """This rank's contiguous share of a global batch, in micro-batches of at most `micro`, and the number of
    micro-batches every rank runs (the same everywhere, as FSDP's collectives need; a rank whose share is
    short runs empty ones). With world 1 these are the single process's micro-batches, in order, so 1 and N
    workers train on the same batches."""
    share = math.ceil(len(items) / world)
    mine = items[rank * share:(rank + 1) * share]
    count = max(1, math.ceil(share / micro))
    return [mine[i * micro:(i + 1) * micro] for i in range(count)], count


def worker_batch(batch_size: int, per_device: int, world: int, what: str) -> tuple[int, int]:
    """(per-worker micro-batch, accumulation steps) keeping the global batch `batch_size` across `world`
    workers, for the transformers Trainer (whose batch is micro x accumulation x world)."""
    if batch_size % world:
        raise ValueError(f"{what}: batch_size={batch_size} is not divisible by num_workers={world}")
    share = batch_size // world
    micro = min(per_device, share)
    if share % micro:
        raise ValueError(f"{what}: batch_size / num_workers = {share} is not a multiple of "
                         f"per_device_batch_size={micro}")
    return micro, share // micro


# --- cluster storage ---------------------------------------------------------------------------------------


def probe_storage(run_dir: Path, timeout_s: float = 60.0) -> int:
    """Check that `run_dir` is the same storage on every alive Ray node: the driver writes a token there, a
    task pinned to each node reads it and writes its own, the driver reads those back. Returns the number of
    nodes; raises one line naming the directory and the node that cannot see it."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    run_dir = Path(run_dir).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    token = uuid.uuid4().hex
    probe = run_dir / f".probe-{token}"
    probe.write_text(token)
    try:
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        refs = {n["NodeManagerAddress"] + "/" + n["NodeID"][:8]: ray.remote(num_cpus=0, max_retries=0)(_probe_node)
                .options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
                .remote(str(probe), token) for n in nodes}
        for node, ref in refs.items():
            try:
                written = ray.get(ref, timeout=timeout_s)
                seen = Path(written).read_text() == token
            except Exception as exc:  # noqa: BLE001 - any failure means the node cannot use the directory
                written, seen = None, False
                cause = getattr(exc, "cause", None) or exc  # the node's own error, not Ray's wrapper
                reason = f"{type(cause).__name__}: {str(cause).splitlines()[0] if str(cause) else ''}"
            else:
                reason = "its file did not come back"
            if written is not None:
                Path(written).unlink(missing_ok=True)
            if not seen:
                raise RuntimeError(f"run directory {run_dir} is not shared with Ray node {node} ({reason}): "
                                   "put it on storage every node mounts at the same path (run.out_dir / --out)")
        return len(refs)
    finally:
        probe.unlink(missing_ok=True)


def _probe_node(probe: str, token: str) -> str:
    import socket

    path = Path(probe)
    if not path.is_file() or path.read_text() != token:
        raise FileNotFoundError(f"{probe} is not visible on {socket.gethostname()}")
    mine = path.with_name(f"{path.name}-{uuid.uuid4().hex[:8]}")
    mine.write_text(token)
    return str(mine)
