"""Resumable checkpoints inside a train stage's in-progress folder, so a killed run resumes mid-stage.

    <train stage folder>/checkpoints/step-<N>/
        model/             a loadable Hugging Face folder (weights gathered from the shards by rank 0, tokenizer)
        state/             what resumes training: model + optimizer as torch.distributed.checkpoint (DCP)
                           shards, one `extra-rank<r>.pt` per rank (scheduler, Python/torch/CUDA RNG);
                           for TRL/transformers trainers, the transformers Trainer checkpoint folder instead
        checkpoint.json    {"step": N, "format": "dcp" | "hf-trainer", "world_size": W, ...loop counters}

A checkpoint is written into `checkpoints/.partial-step-<N>/` and renamed into place once complete, so a
`step-<N>/` folder is always whole. After each save the resumable `state/` of older steps is pruned; their
`model/` folders stay only when asked to (`keep_checkpoints`, learning curves). The data position is the
step: every trainer draws its batches from a stream that is a pure function of (seed, step).
DCP reshards on load, so a run may resume on another number of workers (arXiv 2304.11277, PyTorch FSDP;
https://pytorch.org/docs/stable/distributed.checkpoint.html).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import warnings
from pathlib import Path

import torch
import torch.distributed as dist

CHECKPOINTS = "checkpoints"
INFO = "checkpoint.json"


def rank_world() -> tuple[int, int]:
    """(rank, world size) of this process; (0, 1) outside torch.distributed."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def barrier() -> None:
    if rank_world()[1] > 1:
        dist.barrier()


def step_dir(stage_dir: Path, step: int) -> Path:
    return Path(stage_dir) / CHECKPOINTS / f"step-{step}"


def list_checkpoints(stage_dir: Path) -> list[tuple[int, Path]]:
    """Every complete checkpoint of a train stage folder, as (step, path), in step order."""
    root = Path(stage_dir) / CHECKPOINTS
    found = []
    for path in root.glob("step-*") if root.is_dir() else []:
        suffix = path.name.removeprefix("step-")
        if path.is_dir() and suffix.isdigit() and (path / INFO).is_file():
            found.append((int(suffix), path))
    return sorted(found)


def latest_resumable(stage_dir: Path) -> tuple[int, Path] | None:
    """The newest checkpoint that still holds its resumable state, or None."""
    for step, path in reversed(list_checkpoints(stage_dir)):
        if (path / "state").is_dir():
            return step, path
    return None


def read_info(path: Path) -> dict:
    return json.loads((Path(path) / INFO).read_text())


def truncate_metrics(metrics_path: Path, step: int) -> int:
    """Drop metrics.jsonl rows logged after `step` (they are trained again); return the rows kept."""
    path = Path(metrics_path)
    if not path.is_file():
        return 0
    kept = [line for line in path.read_text().splitlines()
            if line.strip() and json.loads(line).get("step", 0) <= step]
    path.write_text("".join(line + "\n" for line in kept))
    return len(kept)


def restart_metrics(stage_dir: Path, metrics_path: Path | None = None) -> int:
    """A (re)start of a train stage: cut metrics.jsonl back to the newest resumable checkpoint's step, or to
    nothing when there is none, since every later step is trained (and logged) again. Whatever restarts the
    stage (a rerun, Ray Train restarting a lost worker group, a retried task), each step is then logged once.
    Returns that step. Call from one process only (rank 0), before the trainer logs."""
    found = latest_resumable(stage_dir)
    step = found[0] if found else 0
    truncate_metrics(Path(metrics_path) if metrics_path else Path(stage_dir) / "metrics.jsonl", step)
    return step


def prune(stage_dir: Path, *, keep_models: bool, keep_last_state: bool = True) -> None:
    """Remove the resumable state of all but the newest checkpoint (or of all), and model folders unless kept."""
    ckpts = list_checkpoints(stage_dir)
    for i, (_, path) in enumerate(ckpts):
        last = i == len(ckpts) - 1
        if keep_last_state and last:
            continue
        if keep_models:
            shutil.rmtree(path / "state", ignore_errors=True)
        else:
            shutil.rmtree(path, ignore_errors=True)
    root = Path(stage_dir) / CHECKPOINTS
    if root.is_dir() and not any(root.iterdir()):
        root.rmdir()


def export_model(model, tokenizer, out: Path) -> None:
    """Save `model` as a Hugging Face folder from rank 0; under FSDP every rank joins the gather of the shards."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
    from torch.distributed.fsdp import FSDPModule

    rank, _ = rank_world()
    state = None
    if isinstance(model, FSDPModule):
        state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        tied = set(dict(model.named_parameters(remove_duplicate=False))) - set(dict(model.named_parameters()))
        state = {k: v for k, v in state.items() if k not in tied}  # a tied LM head is saved once, as unsharded
    if rank == 0:
        Path(out).mkdir(parents=True, exist_ok=True)
        model.save_pretrained(out, state_dict=state)  # transformers strips FSDP2's class-name prefix
        tokenizer.save_pretrained(out)
    barrier()


def _begin(stage_dir: Path, step: int) -> Path:
    partial = Path(stage_dir) / CHECKPOINTS / f".partial-step-{step}"
    if rank_world()[0] == 0:
        shutil.rmtree(partial, ignore_errors=True)
        (partial / "state").mkdir(parents=True)
    barrier()
    return partial


def _commit(stage_dir: Path, step: int, partial: Path, info: dict, keep_models: bool) -> Path:
    barrier()
    final = step_dir(stage_dir, step)
    if rank_world()[0] == 0:
        (partial / INFO).write_text(json.dumps({"step": step, "world_size": rank_world()[1], **info}, indent=1))
        shutil.rmtree(final, ignore_errors=True)
        os.replace(partial, final)
        prune(stage_dir, keep_models=keep_models)
    barrier()
    return final


def _rng_state() -> dict:
    out = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        out["cuda"] = torch.cuda.get_rng_state()
    return out


def _set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def _dcp_state(model, optimizer, extra_models: dict, trainables: dict) -> dict:
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_state_dict

    out = dict(zip(("model", "optim"), get_state_dict(model, optimizer)))
    out |= {name: get_model_state_dict(m) for name, m in extra_models.items() if m is not None}
    for name, (m, opt, _) in trainables.items():
        out[name], out[f"{name}_optim"] = get_state_dict(m, opt)
    return out


def save_checkpoint(stage_dir: Path, step: int, *, model, optimizer, scheduler, tokenizer, counters: dict,
                    keep_models: bool = False, extra_models: dict | None = None,
                    trainables: dict | None = None) -> Path:
    """Write checkpoints/step-<step>/ (model folder + DCP state) from every rank; return its path.
    `extra_models`: other modules whose weights resume with the run (e.g. Proximal SFT's old policy);
    `trainables`: {name: (module, optimizer, scheduler)} trained beside the model (e.g. PPO's critic)."""
    import torch.distributed.checkpoint as dcp

    rank, _ = rank_world()
    trainables = trainables or {}
    partial = _begin(stage_dir, step)
    with warnings.catch_warnings():  # one process: DCP warns that it assumes so
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        dcp.save(_dcp_state(model, optimizer, extra_models or {}, trainables), checkpoint_id=partial / "state",
                 no_dist=rank_world()[1] == 1)
    torch.save({"scheduler": scheduler.state_dict(), "rng": _rng_state(),
                "schedulers": {name: sched.state_dict() for name, (_, _, sched) in trainables.items()}},
               partial / "state" / f"extra-rank{rank}.pt")
    export_model(model, tokenizer, partial / "model")
    return _commit(stage_dir, step, partial, {"format": "dcp", **counters}, keep_models)


def load_latest(stage_dir: Path, *, model, optimizer, scheduler, extra_models: dict | None = None,
                trainables: dict | None = None) -> dict | None:
    """Restore model, optimizer, scheduler, RNG (and `extra_models`, `trainables`) from the newest resumable
    checkpoint; return its info (step and loop counters), or None when there is none. Every rank calls this."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import set_model_state_dict, set_state_dict

    found = latest_resumable(stage_dir)
    if found is None:
        return None
    _, path = found
    info = read_info(path)
    if info.get("format") != "dcp":
        raise ValueError(f"{path}: a {info.get('format')} checkpoint, not one this loop wrote")
    extra_models = {k: m for k, m in (extra_models or {}).items() if m is not None}
    trainables = trainables or {}
    state = _dcp_state(model, optimizer, extra_models, trainables)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        dcp.load(state, checkpoint_id=path / "state", no_dist=rank_world()[1] == 1)
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])
    for name, m in extra_models.items():
        set_model_state_dict(m, state[name])
    for name, (m, opt, _) in trainables.items():
        set_state_dict(m, opt, model_state_dict=state[name], optim_state_dict=state[f"{name}_optim"])
    rank = rank_world()[0]
    extra_path = path / "state" / f"extra-rank{rank}.pt"
    if not extra_path.is_file():  # resumed on more workers than saved: RNG of rank 0, same schedule
        extra_path = path / "state" / "extra-rank0.pt"
    extra = torch.load(extra_path, weights_only=False)
    scheduler.load_state_dict(extra["scheduler"])
    for name, (_, _, sched) in trainables.items():
        sched.load_state_dict(extra["schedulers"][name])
    _set_rng_state(extra["rng"])
    return info


def resume(job, *, model, optimizer, scheduler, extra_models: dict | None = None,
           trainables: dict | None = None) -> dict:
    """Resume a loop in `job.out_dir` (the stage's in-progress folder): restore the latest checkpoint and cut
    metrics.jsonl back to its step, so that every step is logged once. Returns its info ({"step": 0} if none)."""
    info = load_latest(job.out_dir, model=model, optimizer=optimizer, scheduler=scheduler,
                       extra_models=extra_models, trainables=trainables) or {"step": 0}
    if rank_world()[0] == 0:
        truncate_metrics(job.metrics_path, info["step"])
    barrier()
    return info


def finish(job) -> None:
    """The run completed: drop every checkpoint's resumable state, and the model folders unless kept."""
    root = Path(job.out_dir) / CHECKPOINTS
    if rank_world()[0] == 0:
        prune(job.out_dir, keep_models=job.keep_checkpoints, keep_last_state=False)
        for leftover in root.glob(".partial-*") if root.is_dir() else []:
            shutil.rmtree(leftover, ignore_errors=True)
        if root.is_dir() and not any(root.iterdir()):
            root.rmdir()
    barrier()


# --- transformers Trainer (DPO, GRPO): its own checkpoint folder becomes step-<N>/state ------------------


def hf_checkpoint_callback(stage_dir: Path, trainer_output_dir: Path, tokenizer, keep_models: bool = False):
    """A transformers callback: after the Trainer saves `checkpoint-<N>` (model, optimizer, scheduler, RNG per
    process, trainer state with the data position), move it to checkpoints/step-<N>/state and copy its model
    files into step-<N>/model, in the layout above."""
    from transformers import TrainerCallback

    class StepCheckpoint(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            step = state.global_step
            barrier()  # every process has written its RNG file
            partial = Path(stage_dir) / CHECKPOINTS / f".partial-step-{step}"
            if rank_world()[0] == 0:
                shutil.rmtree(partial, ignore_errors=True)
                partial.mkdir(parents=True)
                os.replace(Path(trainer_output_dir) / f"checkpoint-{step}", partial / "state")
                (partial / "model").mkdir()
                for f in (partial / "state").iterdir():
                    if f.is_file() and (f.suffix in (".json", ".safetensors", ".jinja", ".txt", ".model")
                                        and f.name != "trainer_state.json"):
                        shutil.copy2(f, partial / "model" / f.name)
                tokenizer.save_pretrained(partial / "model")
            _commit(stage_dir, step, partial, {"format": "hf-trainer"}, keep_models)

    return StepCheckpoint()


def hf_resume_from(stage_dir: Path, metrics_path: Path) -> tuple[str | None, int]:
    """(the Trainer checkpoint folder to resume from, its step), metrics.jsonl cut to that step (to nothing
    without a checkpoint: a killed attempt's rows would otherwise stay before the new ones)."""
    found = latest_resumable(stage_dir)
    if found is not None and read_info(found[1]).get("format") != "hf-trainer":
        raise ValueError(f"{found[1]}: not a transformers Trainer checkpoint")
    if rank_world()[0] == 0:
        restart_metrics(stage_dir, metrics_path)
    barrier()
    return (str(found[1] / "state"), found[0]) if found else (None, 0)


def hf_stage(job, trainer_output_dir: Path, tokenizer, log_callback):
    """What a transformers/TRL trainer needs in a train stage: (metrics.jsonl log, on rank 0 only, else None;
    its callbacks: `log_callback(log)` and, with save_steps, `hf_checkpoint_callback`; the Trainer checkpoint
    to resume from or None; that step)."""
    log = job.metrics_log() if rank_world()[0] == 0 else None
    callbacks = [log_callback(log)] if log is not None else []
    if job.save_steps:
        callbacks.append(hf_checkpoint_callback(job.out_dir, trainer_output_dir, tokenizer, job.keep_checkpoints))
    return (log, callbacks, *hf_resume_from(job.out_dir, job.metrics_path))
