"""Tuning that brackets: a train entry's `sweep:` grid, a validation split, range extension, and the choice.

    train:
      - {name: dpo, algorithm: dpo, learning_rate: 1.0e-4, sweep: {learning_rate: [3.0e-5, 1.0e-4, 3.0e-4]}}

Every combination of the grid (a trial) trains once from the same base model on the same data with the
first run seed (stage `trial/<entry>/<j>`). `tune/<entry>` scores each trial's Average@k on the validation
split, with its standard error over the validation problems, and chooses by the one-standard-error rule:
among the trials within one standard error of the best score, the one with the smallest value of
`tune.extend` (the learning rate: the more conservative step away from the base model), so that the noise of
a finite split (about +-2-3 points at 200-400 prompts, k = 4) does not pick an extreme value by luck.
When the chosen value is the smallest or largest searched, the range extends in that direction: one more
trial at that value divided or multiplied by `tune.extend_factor`, trained and scored inside the tune stage
(`tune/<entry>/trial-<j>/`), up to `tune.max_extensions` times; the same factor and cap hold for every method
and every trial counts (trials.csv, the report's tuning table). A choice still at an edge after the cap is
flagged (`at_edge` in chosen.json and tuning.csv), and so is a method whose trial count differs from the
others'. Then `train/<entry>` (once per seed) trains with the chosen values.

Range extension rather than a seeded sampler (e.g. Optuna's ask/tell): a sampler over a fixed range still has
edges and cannot tell that the optimum lies beyond them; extension moves the range until the choice is
interior, at the price of trial counts that differ between methods (reported).

The validation split (stage `validation`) comes from the training prompt source, after the training prompts,
minus every training prompt (by prompt_id and by problem text) and every problem of the test benchmarks in
full (whatever `evaluate.limit`), so the same recipe tunes on the same prompts at any evaluation limit.
"""

from __future__ import annotations

import itertools
import json
import shutil
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
    extend: str = Field("learning_rate", description="The swept field whose range extends when the choice is at "
                        "its smallest or largest value (numeric; sweeps without it never extend).")
    extend_factor: float = Field(3.0, gt=1, description="An extension trial's value: the edge value divided "
                                 "(low edge) or multiplied (high edge) by this, the same for every method.")
    max_extensions: int = Field(2, ge=0, description="Most extension trials per entry, the same for every method; "
                                "a choice still at an edge after them is flagged in the report.")


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
    stages.append(make(f"tune/{entry.name}", "tune", ["validation", "build"] + [s.name for s in stages],
                       {"tune": dump["tune"], "evaluate": dump["evaluate"], "template": dump["template"],
                        "verify": dump["verify"], "seed": seed, "entry": base_config},
                       extra={"entry": entry.name, "entry_index": index, "trials": trials, "seed": seed}))
    return stages


def validation_config(recipe) -> dict:
    dump = recipe.model_dump(mode="json")
    return {"prompts": dump["prompts"], "validation_prompts": dump["tune"]["validation_prompts"],
            "seed": recipe.run.seed, "benchmarks": dump["evaluate"]["benchmarks"]}


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
    tests = load_benchmarks(benchmark_refs(recipe.evaluate.benchmarks, None))  # every test problem, any limit
    test_problems = {p.strip() for df in tests.values() for p in df["problem"].to_list()}
    train_problems = {p.strip() for p in training["problem"].to_list()}
    in_training = pool["prompt_id"].is_in(training["prompt_id"].to_list()) | \
        pool["problem"].str.strip_chars().is_in(list(train_problems))
    in_tests = pool["problem"].str.strip_chars().is_in(list(test_problems))
    kept = pool.filter(~in_training & ~in_tests).unique("problem", keep="first", maintain_order=True).head(n)
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


def choose(scores: list[float], ses: list[float] | None = None, values: list[float] | None = None) -> int:
    """The one-standard-error rule: among trials scoring at least best - SE(best), the one with the smallest
    `values` (the conservative learning rate); ties, or no `values`, go to the earlier trial. Without `ses`
    it is the plain best score."""
    best = max(range(len(scores)), key=lambda j: (scores[j], -j))
    floor = scores[best] - (ses[best] if ses else 0.0)
    close = [j for j in range(len(scores)) if scores[j] >= floor - 1e-12]
    if values is None:
        return min(close)
    return min(close, key=lambda j: (values[j], j))


def edge(values: list[float], j: int) -> str | None:
    """'low' or 'high' when trial j's value is the smallest or largest searched (None: interior, or one value)."""
    if len(set(values)) < 2:  # one value searched: no range to extend
        return None
    if values[j] == min(values):
        return "low"
    if values[j] == max(values):
        return "high"
    return None


def score_trial(model: Path, split: pl.DataFrame, cfg, recipe, out: Path, name: str, seed: int) -> tuple[float, float]:
    """(validation Average@k, its standard error over the validation problems) of one trial's model."""
    from evaluators.evaluate import evaluate_problems
    from evaluators.report import problem_scores

    evaluate_problems(str(model), {"validation": split}, cfg, cfg.prompt_template(recipe.template), out, name, seed,
                      verify=recipe.verify)
    scores = problem_scores(out, "validation")["score"].to_numpy()
    se = float(scores.std(ddof=1) / len(scores) ** 0.5) if len(scores) > 1 else 0.0
    return float(scores.mean()), se


def tune_stage(ctx) -> dict:
    """Score every trial of one entry on the validation split, extend the range while the choice sits at an
    edge (module docstring); write trials.csv (every trial: values, score, standard error, ledger) and
    chosen.json."""
    from workbench.budget import read_ledger
    from workbench.train_stage import train_now

    recipe, name, seed, tune = ctx.recipe, ctx.extra["entry"], ctx.extra["seed"], ctx.recipe.tune
    entry = recipe.train[ctx.extra["entry_index"]]
    split = pl.read_parquet(ctx.inputs["validation"] / "validation.parquet")
    cfg = recipe.evaluate.model_copy(update={"k": tune.k or recipe.evaluate.k, "limit": None})
    rows = []

    def add(j: int, values: dict, model: Path, ledger: dict, extension: bool) -> None:
        score, se = score_trial(model, split, cfg, recipe, ctx.out / f"trial-{j}", f"{name}/{j}", seed)
        rows.append({"trial": j, "values": json.dumps(values, sort_keys=True), "extension": extension,
                     "validation_avg_at_k": score, "validation_se": se, **ledger})

    for j, values in enumerate(ctx.extra["trials"]):
        folder = ctx.inputs[f"trial/{name}/{j}"]
        add(j, values, folder / "model", read_ledger(folder), False)
    key = tune.extend if tune.extend in (entry.sweep or {}) else None
    extensions = 0
    while True:
        keyed = [float(json.loads(r["values"])[key]) for r in rows] if key else None
        best = choose([r["validation_avg_at_k"] for r in rows], [r["validation_se"] for r in rows], keyed)
        side = edge(keyed, best) if key else None
        if side is None or extensions >= tune.max_extensions:
            break
        far = min(keyed) if side == "low" else max(keyed)
        value = far / tune.extend_factor if side == "low" else far * tune.extend_factor
        values = {**json.loads(rows[best]["values"]), key: float(f"{value:.4g}")}
        j = len(rows)
        out = ctx.out / f"trial-{j}"
        counts = train_now(recipe, with_values(entry, values), ctx.base_model, ctx.inputs["build"], out, seed)
        (out / "counts.json").write_text(json.dumps(counts, indent=2, default=str))
        add(j, values, out / "model", counts["ledger"], True)
        shutil.rmtree(out / "model", ignore_errors=True)  # scored; the chosen values train again per seed
        extensions += 1
    chosen = rows[best]
    pl.DataFrame(rows).write_csv(ctx.out / "trials.csv")
    choice = {"entry": name, "trial": chosen["trial"], "values": json.loads(chosen["values"]),
              "validation_avg_at_k": chosen["validation_avg_at_k"], "validation_se": chosen["validation_se"],
              "trials": len(rows), "extensions": extensions, "at_edge": side, "rule": "one standard error, "
              f"smallest {key}" if key else "one standard error, earliest trial", "k": cfg.k,
              "validation_prompts": split.height}
    (ctx.out / "chosen.json").write_text(json.dumps(choice, indent=2))
    return {"trials": len(rows), "extensions": extensions, "chosen": chosen["trial"], "at_edge": str(side),
            "validation_avg_at_k": round(100 * chosen["validation_avg_at_k"], 2)}


TUNING_SCHEMA = {"method": pl.Utf8, "trial": pl.Int64, "values": pl.Utf8, "extension": pl.Boolean,
                 "validation_avg_at_k": pl.Float64, "validation_se": pl.Float64, "chosen": pl.Boolean,
                 "at_edge": pl.Utf8, "samples": pl.Int64, "flops": pl.Float64, "wall_s": pl.Float64}


def tuning_table(recipe, inputs: dict[str, Path]) -> pl.DataFrame:
    """Every trial of every swept entry (tuning.csv): its values, validation Average@k and standard error
    (percent), whether it was a range extension, whether it was chosen (the chosen row's `at_edge` names the edge,
    low or high, it is still at after the extensions; empty inside the range), and its ledger's samples, FLOPs
    and wall time. Entries without a sweep have no rows."""
    rows = []
    for entry in recipe.train:
        folder = inputs.get(f"tune/{entry.name}")
        if folder is None:
            continue
        choice = read_choice(folder)
        trials = pl.read_csv(Path(folder) / "trials.csv")
        for r in trials.iter_rows(named=True):
            rows.append({"method": entry.name, "trial": r["trial"], "values": r["values"],
                         "extension": bool(r.get("extension", False)),
                         "validation_avg_at_k": round(100 * r["validation_avg_at_k"], 2),
                         "validation_se": round(100 * r["validation_se"], 2), "chosen": r["trial"] == choice["trial"],
                         "at_edge": choice.get("at_edge") if r["trial"] == choice["trial"] else None,
                         "samples": r.get("samples"), "flops": r.get("flops"), "wall_s": r.get("wall_s")})
    return pl.DataFrame(rows, schema=TUNING_SCHEMA)


def tuning_summary(recipe, inputs: dict[str, Path]) -> list[dict]:
    """Per swept entry: trials, extensions, chosen values, their score and SE, `at_edge`, and whether the trial
    count differs from the most common one among the entries."""
    out = []
    for entry in recipe.train:
        folder = inputs.get(f"tune/{entry.name}")
        if folder is not None:
            c = read_choice(folder)
            out.append({"method": entry.name, "trials": c["trials"], "extensions": c.get("extensions", 0),
                        "chosen": json.dumps(c["values"], sort_keys=True), "at_edge": c.get("at_edge"),
                        "validation_avg_at_k": round(100 * c["validation_avg_at_k"], 2),
                        "validation_se": round(100 * c.get("validation_se", 0.0), 2)})
    counts = [r["trials"] for r in out]
    usual = max(set(counts), key=counts.count) if counts else 0
    for r in out:
        r["trials_differ"] = r["trials"] != usual
    return out
