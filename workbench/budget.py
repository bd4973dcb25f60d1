"""The budget ledger: what every train (and trial) entry spent, in the same units for every method, and budget
matching (online entries spend what the offline data generation spent).

One ledger row per train or trial stage (`ledger_row`), written into its manifest (`counts.ledger`) and read by
the sweep (trials.csv), the report (costs.csv, table2.md) and the budget figure (evaluators/curves.py), through
`read_ledger(stage folder)` (one stage) or `run_ledger(run directory)` (every train and trial stage):

    column            unit / meaning
    samples           completions sampled: the offline generation's for entries on positives or pairs (they
                      are charged the generation their data came from), the entry's own rollouts for entries on
                      prompts (PPO, GRPO); 0 for demonstrations (nobody sampled them)
    generated_tokens  response tokens of those completions
    trained_tokens    tokens (prompt + response) passed through a model with gradient, per model and pass
                      (PPO: actor and critic; every epoch counts again)
    forwarded_tokens  tokens passed through a model without gradient: reference (DPO, PPO with kl_coef > 0,
                      GRPO with beta > 0), old policy and critic values (PPO)
    parameters        N, the base model's parameter count
    flops             estimated: 2N x generated_tokens + 6N x trained_tokens + 2N x forwarded_tokens
                      (Kaplan et al. 2020's forward 2N and forward+backward 6N per token; attention and
                      prompt prefill during sampling are left out)
    wall_s            the stage's own wall time (training only; the offline generation's is in gen_wall_s)
    gen_wall_s        wall time of the sampling charged to it (the generate stage for offline entries)

`match_samples` derives an online entry's `max_steps` from the offline generation's samples
(`prompts.max_prompts x generate.n`), so `budget: {match: samples}` gives PPO and GRPO the completions that
DFT, RFT and DPO were built from. FLOPs matching is not offered: an online step's FLOPs depend on response
lengths known only after its rollouts, so a step count derived from them before training would be a guess.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Literal

from pydantic import Field

from workbench.config_base import Section

LEDGER_COLUMNS = ["samples", "generated_tokens", "trained_tokens", "forwarded_tokens", "parameters", "flops",
                  "wall_s", "gen_wall_s"]
FLOPS_FORMULA = "FLOPs = 2N x generated + 6N x trained + 2N x forwarded tokens (N = parameters)"


class BudgetConfig(Section):
    """Budget matching between the offline methods and the online ones."""

    match: Literal["samples", "none"] = Field(
        "none", description="samples: every train entry that consumes prompts (PPO, GRPO) gets the max_steps that "
        "samples as many completions as the offline generation did (prompts.max_prompts x generate.n); none: "
        "each entry's own max_steps / num_epochs.")


def flops(parameters: int, generated: int, trained: int, forwarded: int) -> float:
    """Estimated FLOPs: 2N per generated token, 6N per trained token, 2N per forwarded token."""
    return float(parameters) * (2.0 * generated + 6.0 * trained + 2.0 * forwarded)


def count_parameters(model_dir: str | Path) -> int:
    """Parameters of a Hugging Face model folder, from its safetensors headers (no weights loaded); for other
    weight files, the estimate of `workbench.resources.model_shape` (weight bytes / dtype size); 0 when the folder
    has no weights to count (the ledger then records FLOPs as 0, unknown, rather than failing a finished stage)."""
    import struct

    from workbench.resources import model_shape

    total = 0
    for path in sorted(Path(model_dir).glob("*.safetensors")):
        with open(path, "rb") as f:
            header = json.loads(f.read(struct.unpack("<Q", f.read(8))[0]))
        for name, info in header.items():
            if name != "__metadata__":
                total += math.prod(info["shape"])
    return total or model_shape(str(model_dir))["params"]


def samples_per_step(cfg) -> int:
    """Completions an online trainer samples per step (`max_steps` unit): PPO rollout_batch_size x
    samples_per_prompt; GRPO (TRL) batch_size completions per optimizer step, / num_iterations reuses."""
    if hasattr(cfg, "samples_per_prompt") and hasattr(cfg, "rollout_batch_size"):
        return int(cfg.rollout_batch_size) * int(cfg.samples_per_prompt)
    if hasattr(cfg, "num_generations"):
        return max(1, int(cfg.batch_size) // int(getattr(cfg, "num_iterations", 1)))
    raise ValueError(f"budget: cannot tell how many completions {type(cfg).__name__} samples per step")


def offline_samples(recipe) -> int:
    """The offline generation's completions as planned: prompts.max_prompts x generate.n."""
    if not recipe.prompts.max_prompts:
        raise ValueError("budget.match: samples needs prompts.max_prompts (the offline sample count is "
                         "max_prompts x generate.n)")
    return int(recipe.prompts.max_prompts) * int(recipe.generate.n)


def matched_steps(cfg, target_samples: int, world: int = 1) -> int:
    """Steps that sample at least `target_samples` completions (rounded up; GRPO with a rollout_batch_size:
    up to whole rollouts)."""
    steps = math.ceil(target_samples / samples_per_step(cfg))
    rollout = getattr(cfg, "rollout_batch_size", None)
    if hasattr(cfg, "num_generations") and rollout:  # GRPO steps come in whole rollouts
        per = max(1, rollout * cfg.num_generations // cfg.batch_size)
        steps = math.ceil(steps / per) * per
    return steps


def apply_matching(recipe, source: str = "<recipe>") -> None:
    """`budget.match: samples`: set max_steps of every entry that consumes prompts (at recipe load, so the
    derived value is hashed like any other field and printed by --dry-run). A recipe's own max_steps on such an
    entry is refused: the budget decides it."""
    from workbench.recipe import RecipeError
    from workbench.registry import get_trainer
    from workbench.train_stage import data_kind

    if recipe.budget.match == "none":
        return
    try:
        target = offline_samples(recipe)
    except ValueError as exc:
        raise RecipeError(f"{source}: {exc}") from None
    for i, entry in enumerate(recipe.train):
        plugin = get_trainer(entry.algorithm)
        if data_kind(plugin, entry.config) != "prompts":
            continue
        extra = entry.model_extra or {}
        if "max_steps" in extra:
            raise RecipeError(f"{source}: train[{i}].max_steps: set by budget.match: {recipe.budget.match} "
                              "(remove it, or set budget.match: none)")
        steps = matched_steps(entry.config, target)
        entry.__pydantic_extra__["max_steps"] = steps
        entry._config = plugin.Config.model_validate(entry.__pydantic_extra__)


def planned(recipe) -> list[dict]:
    """Each train entry's planned budget (what --dry-run prints): samples, steps, and how they were set."""
    from workbench.registry import get_trainer
    from workbench.train_stage import data_kind

    rows = []
    gen = recipe.prompts.max_prompts * recipe.generate.n if recipe.prompts.max_prompts else None
    for entry in recipe.train:
        cfg, kind = entry.config, data_kind(get_trainer(entry.algorithm), entry.config)
        if kind == "prompts":
            per = samples_per_step(cfg)
            steps = cfg.max_steps if cfg.max_steps > 0 else None
            rows.append({"entry": entry.name, "data": kind, "samples": steps * per if steps else None,
                         "steps": steps, "how": f"{per} completions/step x {steps} steps"
                         + (f" (budget.match: samples = {gen})" if recipe.budget.match == "samples" else "")})
        else:
            rows.append({"entry": entry.name, "data": kind, "samples": gen if kind in ("positives", "pairs") else 0,
                         "steps": cfg.max_steps if cfg.max_steps > 0 else None,
                         "how": f"the offline generation ({recipe.prompts.max_prompts} prompts x {recipe.generate.n})"
                         if kind in ("positives", "pairs") else "gold demonstrations (nothing sampled)"})
    return rows


def forwarded_tokens(algorithm: str, cfg, counts: dict) -> int:
    """Tokens forwarded without gradient, from what the trainer reported, else from its algorithm: DPO's
    reference on every trained pair token; PPO's old policy and critic (and reference when kl_coef > 0) on
    every rollout token; GRPO's reference when beta > 0 and old policy when it reuses a rollout."""
    if "forwarded_tokens" in counts:
        return int(counts["forwarded_tokens"])
    trained = int(counts.get("train_tokens", 0))
    if algorithm == "dpo":
        return trained
    if algorithm == "ppo":
        passes = 2 + (1 if getattr(cfg, "kl_coef", 0) > 0 else 0)
        return passes * int(counts.get("rollout_tokens", 0))
    if algorithm == "grpo":
        passes = (1 if getattr(cfg, "beta", 0) > 0 else 0) + (1 if getattr(cfg, "num_iterations", 1) > 1 else 0)
        return passes * trained
    if getattr(cfg, "kl_weight", 0) or algorithm in ("iwsft", "psft"):
        return trained  # a frozen base (ASFT, iw-SFT) or old policy (PSFT) scores the same tokens
    return 0


def ledger_row(counts: dict, cfg, generate: dict | None, parameters: int) -> dict:
    """The ledger row (module docstring) of one train/trial stage from its manifest `counts`, its algorithm
    config and the generate stage's manifest (None when nothing was sampled offline)."""
    kind, algorithm = counts.get("data"), counts.get("algorithm", "")
    trained = int(counts.get("train_tokens", 0))
    if algorithm == "ppo":
        trained *= 2  # the critic trains on the same tokens as the actor
    if kind in ("positives", "pairs") and generate:
        g = generate.get("counts", {})
        samples, gen_tokens, gen_wall = int(g.get("samples", 0)), int(g.get("tokens", 0)), float(
            generate.get("wall_time_s", 0.0))
    else:
        samples, gen_tokens, gen_wall = int(counts.get("samples_generated", 0)), int(
            counts.get("generated_tokens", 0)), 0.0
    fwd = forwarded_tokens(algorithm, cfg, counts)
    return {"samples": samples, "generated_tokens": gen_tokens, "trained_tokens": trained, "forwarded_tokens": fwd,
            "parameters": int(parameters), "flops": flops(parameters, gen_tokens, trained, fwd),
            "wall_s": float(counts.get("train_time_s", 0.0)), "gen_wall_s": gen_wall}


def read_ledger(stage_dir: Path, generate: dict | None = None, parameters: int = 0) -> dict:
    """The ledger row of one finished train or trial stage folder: what its manifest recorded (`counts.ledger`),
    or, for a manifest from before the ledger, a row computed from its counts (`generate`: the generate stage's
    manifest, charged to offline entries; `parameters`: N, 0 when unknown, so FLOPs read 0)."""
    from workbench.rundir import read_manifest

    manifest = read_manifest(stage_dir)
    if manifest is None:
        raise FileNotFoundError(f"budget: {Path(stage_dir) / 'manifest.json'} is missing (did that stage finish?)")
    counts = manifest.get("counts", {})
    if "ledger" in counts:
        return dict(counts["ledger"])
    gen = generate if counts.get("data") in ("positives", "pairs") else None
    return ledger_row(counts, None, gen, parameters)


def run_ledger(run_dir: Path) -> list[dict]:
    """Every finished train and trial stage of a run directory with its ledger row: [{stage, algorithm, data,
    steps, **ledger}], train stages first, each group in name order. Tune-stage range extensions are in their
    tune/<entry>/trials.csv (workbench/sweep.py)."""
    from workbench.rundir import read_manifest

    run_dir = Path(run_dir)
    generate = read_manifest(run_dir / "generate")
    rows = []
    for manifest_path in sorted((run_dir / "train").glob("*/manifest.json")) + sorted(
            (run_dir / "trial").glob("*/*/manifest.json")):
        folder = manifest_path.parent
        counts = (read_manifest(folder) or {}).get("counts", {})
        rows.append({"stage": str(folder.relative_to(run_dir)), "algorithm": counts.get("algorithm"),
                     "data": counts.get("data"), "steps": int(counts.get("steps", 0)),
                     **read_ledger(folder, generate)})
    return rows


def mean_rows(rows: list[dict]) -> dict:
    """The mean of several seeds' ledger rows (integers rounded)."""
    out = {}
    for key in LEDGER_COLUMNS:
        value = sum(r[key] for r in rows) / len(rows)
        out[key] = value if key in ("flops", "wall_s", "gen_wall_s") else round(value)
    return out


def budget_lines(recipe) -> list[str]:
    """`--dry-run`'s budget lines: the unit matched, then one line per train entry."""
    head = (f"budget: budget.match = {recipe.budget.match}"
            + (" (online entries' max_steps derived from the offline generation's samples)"
               if recipe.budget.match != "none" else ""))
    lines = [head]
    for row in planned(recipe):
        samples = "?" if row["samples"] is None else f"{row['samples']:,}"
        lines.append(f"  {row['entry']}: {samples} completions sampled ({row['data']}: {row['how']})")
    return lines
