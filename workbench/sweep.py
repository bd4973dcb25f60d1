"""Equal tuning budgets: a train entry's `sweep:` grid, a validation split, and the choice of one trial.

    train:
      - {name: dpo, algorithm: dpo, learning_rate: 1.0e-4, sweep: {learning_rate: [3.0e-5, 1.0e-4, 3.0e-4]}}

Every combination of the grid (a trial) trains once from the same base model on the same data with the
first run seed (stage `trial/<entry>/<j>`); `tune/<entry>` scores each trial's Average@k on the
validation split and keeps the best (ties: the earlier trial); then `train/<entry>` (once per seed)
trains with the chosen values. The validation split (stage `validation`) comes from the training prompt
source, after the training prompts, minus every training prompt and every problem of the test benchmarks
as evaluated. A comparison gives every method a grid of the same size (the same number of trials), so no
baseline loses for lack of tuning; the report lists each method's trials and chosen values.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import polars as pl
from pydantic import Field, ValidationError

from workbench.config_base import Section

RESERVED = {"name", "algorithm", "num_cpus", "num_gpus", "sweep"}


class TuneConfig(Section):
    """How sweeps choose a trial (used only by train entries that carry a `sweep:`)."""

    validation_prompts: int = Field(200, ge=1, description="Prompts in the validation split, held out from the "
                                    "training prompt source (disjoint from training prompts and test benchmarks).")
    k: int | None = Field(None, ge=1, description="Samples per validation prompt (default: evaluate.k).")


def grid(sweep: dict[str, list]) -> list[dict]:
    """Every combination of the sweep's values, first key varying slowest, in the recipe's order."""
    keys = list(sweep)
    return [dict(zip(keys, values)) for values in itertools.product(*(sweep[k] for k in keys))]


def check_sweep(entry, plugin, where: str) -> None:
    """Refuse a sweep over unknown or reserved fields, empty value lists, or values the config rejects."""
    from workbench.recipe import RecipeError

    for key, values in entry.sweep.items():
        if key in RESERVED or key not in plugin.Config.model_fields:
            raise RecipeError(f"{where}.{key}: not a config field of {entry.algorithm!r} (known: "
                              f"{', '.join(sorted(plugin.Config.model_fields))})")
        if not isinstance(values, list) or not values:
            raise RecipeError(f"{where}.{key}: expected a non-empty list of values")
    for values in grid(entry.sweep):
        try:
            plugin.Config.model_validate({**(entry.model_extra or {}), **values})
        except ValidationError as exc:
            err = exc.errors()[0]
            raise RecipeError(f"{where}.{err['loc'][0]}: {err['msg']}, got {err.get('input')!r}") from None


def with_values(entry, values: dict):
    """A copy of the train entry whose algorithm config has `values` applied (validated again)."""
    from workbench.registry import get_trainer

    copy = entry.model_copy(deep=True)
    copy._config = get_trainer(entry.algorithm).Config.model_validate({**(entry.model_extra or {}), **values})
    return copy


def stage_entry(pipeline, stage):
    """The train entry a `trial/...` or `train/...` stage trains: the recipe's, with the trial's values or
    the values its `tune/<entry>` stage chose."""
    entry = pipeline.recipe.train[stage.extra["entry_index"]]
    values = stage.extra.get("values")
    if values is None and stage.extra.get("tune"):
        values = read_choice(pipeline.rundir.path(stage.extra["tune"]))["values"]
    return with_values(entry, values) if values else entry


def read_choice(tune_dir: Path) -> dict:
    path = Path(tune_dir) / "chosen.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing (did the tune stage finish?)")
    return json.loads(path.read_text())


def sweep_stages(recipe, index: int, base_config: dict, make) -> list:
    """The trial stages and the tune stage of train entry `index`; `make` builds a pipeline Stage."""
    entry = recipe.train[index]
    seed = recipe.run.seed_list[0]
    trials = grid(entry.sweep)
    stages = [make(f"trial/{entry.name}/{j}", "trial", ["build"], {**base_config, "values": values, "seed": seed},
                   extra={"entry_index": index, "values": values, "seed": seed}) for j, values in enumerate(trials)]
    dump = recipe.model_dump(mode="json")
    stages.append(make(f"tune/{entry.name}", "tune", ["validation"] + [s.name for s in stages],
                       {"tune": dump["tune"], "evaluate": dump["evaluate"], "template": dump["template"],
                        "verify": dump["verify"], "seed": seed},
                       extra={"entry": entry.name, "trials": trials, "seed": seed}))
    return stages


def validation_config(recipe) -> dict:
    dump = recipe.model_dump(mode="json")
    return {"prompts": dump["prompts"], "tune": dump["tune"], "seed": recipe.run.seed,
            "benchmarks": dump["evaluate"]["benchmarks"], "limit": dump["evaluate"]["limit"]}


def validation_split(recipe, training: pl.DataFrame) -> tuple[pl.DataFrame, dict]:
    """(validation problems as problem_id, problem, answer; counts of what was left out)."""
    from data_gen.prompts import load_prompts
    from evaluators.evaluate import benchmark_refs, load_benchmarks

    cfg, n = recipe.prompts, recipe.tune.validation_prompts
    if cfg.source == "toy":  # the toy draw is prefix-stable: the training prompts come first, then more
        pool_cfg = cfg.model_copy(update={"max_prompts": (cfg.max_prompts or 0) + 2 * n + 100})
    else:
        pool_cfg = cfg.model_copy(update={"max_prompts": None})
    pool, _ = load_prompts(pool_cfg, recipe.run.seed)
    tests = load_benchmarks(benchmark_refs(recipe.evaluate.benchmarks, recipe.evaluate.limit))
    test_problems = {p.strip() for df in tests.values() for p in df["problem"].to_list()}
    in_training = pool["prompt_id"].is_in(training["prompt_id"].to_list())
    in_tests = pool["problem"].str.strip_chars().is_in(list(test_problems))
    kept = pool.filter(~in_training & ~in_tests).head(n)
    if kept.height < n:
        raise ValueError(f"tune.validation_prompts: the prompt source has only {kept.height} prompts beyond the "
                         f"{training.height} training prompts and the test problems; lower it (asked {n})")
    counts = {"validation_prompts": kept.height, "left_out_training": int(in_training.sum()),
              "left_out_test": int((in_tests & ~in_training).sum())}
    return kept.select(pl.col("prompt_id").alias("problem_id"), "problem", "answer"), counts


def validation_stage(ctx) -> dict:
    """Write validation/validation.parquet: the held-out prompts every sweep scores its trials on."""
    training = pl.read_parquet(ctx.inputs["prompts"] / "prompts.parquet")
    split, counts = validation_split(ctx.recipe, training)
    split.write_parquet(ctx.out / "validation.parquet")
    return counts


def choose(scores: list[float]) -> int:
    """The index of the best validation score; a tie goes to the earlier trial."""
    return max(range(len(scores)), key=lambda j: (scores[j], -j))


def tune_stage(ctx) -> dict:
    """Score every trial of one entry on the validation split; write trials.csv and chosen.json."""
    from evaluators.evaluate import evaluate_problems

    recipe, name, seed = ctx.recipe, ctx.extra["entry"], ctx.extra["seed"]
    split = pl.read_parquet(ctx.inputs["validation"] / "validation.parquet")
    cfg = recipe.evaluate.model_copy(update={"k": recipe.tune.k or recipe.evaluate.k, "limit": None})
    rows = []
    for j, values in enumerate(ctx.extra["trials"]):
        model = ctx.inputs[f"trial/{name}/{j}"] / "model"
        summary = evaluate_problems(str(model), {"validation": split}, cfg, cfg.prompt_template(recipe.template),
                                    ctx.out / f"trial-{j}", f"{name}/{j}", seed, verify=recipe.verify)
        rows.append({"trial": j, "values": json.dumps(values, sort_keys=True),
                     "validation_avg_at_k": float(summary["avg_at_k"][0])})
    best = rows[choose([r["validation_avg_at_k"] for r in rows])]
    pl.DataFrame(rows).write_csv(ctx.out / "trials.csv")
    choice = {"entry": name, "trial": best["trial"], "values": json.loads(best["values"]),
              "validation_avg_at_k": best["validation_avg_at_k"], "trials": len(rows), "k": cfg.k,
              "validation_prompts": split.height}
    (ctx.out / "chosen.json").write_text(json.dumps(choice, indent=2))
    return {"trials": len(rows), "chosen": best["trial"], "validation_avg_at_k": round(100 * best[
        "validation_avg_at_k"], 2)}


def tuning_table(recipe, inputs: dict[str, Path]) -> pl.DataFrame:
    """Per train entry: trials run, chosen values (JSON) and their validation Average@k (percent)."""
    rows = []
    for entry in recipe.train:
        folder = inputs.get(f"tune/{entry.name}")
        if folder is None:
            rows.append({"method": entry.name, "trials": 1, "chosen": "{}", "validation_avg_at_k": None})
            continue
        choice = read_choice(folder)
        rows.append({"method": entry.name, "trials": choice["trials"],
                     "chosen": json.dumps(choice["values"], sort_keys=True),
                     "validation_avg_at_k": round(100 * choice["validation_avg_at_k"], 2)})
    return pl.DataFrame(rows, schema={"method": pl.Utf8, "trials": pl.Int64, "chosen": pl.Utf8,
                                      "validation_avg_at_k": pl.Float64})
