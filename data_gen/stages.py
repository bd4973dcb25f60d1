"""The data-generation stages of the pipeline: prompts -> generate -> verify -> build.

Each is `fn(ctx: StageContext) -> dict of counts`; it reads upstream folders from `ctx.inputs` and writes
the files of the run-directory layout (see DESIGN.md) into `ctx.out`.
"""

from __future__ import annotations

import json
import shutil

import polars as pl

from data_gen.builders import (
    PAIR_SCHEMA,
    POSITIVE_SCHEMA,
    build_demonstrations,
    build_pairs,
    build_positives,
    build_rl_prompts,
    build_stats,
    print_stats,
)
from data_gen.engines import sample
from data_gen.export import provenance
from data_gen.prompts import load_prompts
from data_gen.samplers import render_prompts, resolve_engine
from data_gen.shards import ShardStore
from data_gen.verifiers import make_verifier, verify_frame
from workbench.console import readable
from workbench.resources import check_disk, samples_bytes
from workbench.stage import StageContext

console = readable()  # one line per message, also in a log file

SAMPLE_SCHEMA = {"prompt_id": pl.String, "sample_idx": pl.Int64, "response": pl.String,
                 "num_tokens": pl.Int64, "finish_reason": pl.String}


def prompts_stage(ctx: StageContext) -> dict:
    """Load the prompt set; write prompts/prompts.parquet. Skipped rows are printed and counted."""
    df, skipped = load_prompts(ctx.recipe.prompts, ctx.recipe.run.seed)
    df.write_parquet(ctx.out / "prompts.parquet")
    if any(skipped.values()):
        console.print(f"prompts: skipped {', '.join(f'{v} {k}' for k, v in skipped.items() if v)}")
    return {"prompts": len(df), **{f"skipped_{k}": v for k, v in skipped.items()}}


def generate_stage(ctx: StageContext) -> dict:
    """Sample generate.n responses per prompt from the base model; write generate/samples.parquet.

    Finished shards are saved in the stage's in-progress folder as they complete; a rerun after a kill
    samples only the missing ones (see data_gen/shards.py and `sample`)."""
    cfg = ctx.recipe.generate
    prompts = pl.read_parquet(ctx.inputs["prompts"] / "prompts.parquet")
    model = str(ctx.base_model)
    check_disk(ctx.out, [("generate", samples_bytes(len(prompts), cfg.n, cfg.max_tokens))])  # refuse early
    rendered = render_prompts(model, prompts["problem"].to_list(), ctx.recipe.template)
    shards = ShardStore(ctx.out / "shards")  # in the resumable in-progress folder: a killed run keeps them
    completions = sample(model, rendered, cfg, cfg.n, ctx.recipe.run.seed, desc="generate", shards=shards,
                         log_dir=ctx.out)  # the engine actors' output: generate/engine.log
    rows = {k: [] for k in SAMPLE_SCHEMA}
    for pid, comps in zip(prompts["prompt_id"].to_list(), completions):
        for idx, c in enumerate(comps):
            rows["prompt_id"].append(pid)
            rows["sample_idx"].append(idx)
            rows["response"].append(c.text)
            rows["num_tokens"].append(c.num_tokens)
            rows["finish_reason"].append(c.finish_reason)
    samples = pl.DataFrame(rows, schema=SAMPLE_SCHEMA)
    samples.write_parquet(ctx.out / "samples.parquet")
    shutil.rmtree(shards.folder, ignore_errors=True)  # scratch: samples.parquet holds them all now
    return {"prompts": len(prompts), "samples": len(samples), "tokens": int(samples["num_tokens"].sum()),
            "truncated": int((samples["finish_reason"] == "length").sum()), "engine": resolve_engine(cfg),
            "shards": shards.total, "shards_reused": shards.reused, **provenance(model)}


def verify_stage(ctx: StageContext) -> dict:
    """Grade every sample with the recipe's verifier (Ray tasks); write verify/verified.parquet."""
    samples = pl.read_parquet(ctx.inputs["generate"] / "samples.parquet")
    answers = pl.read_parquet(ctx.inputs["prompts"] / "prompts.parquet").select("prompt_id", "answer")
    df = samples.join(answers, on="prompt_id", how="left", maintain_order="left")
    missing = df.filter(pl.col("answer").is_null())
    if len(missing):
        raise ValueError(f"verify: {len(missing)} samples have no gold answer (e.g. prompt_id "
                         f"{missing['prompt_id'][0]!r})")
    verified = verify_frame(df, ctx.recipe.verify).drop("answer")
    verified.write_parquet(ctx.out / "verified.parquet")
    counts = {"samples": len(verified), "correct": int(verified["correct"].sum())}
    counts.update({s: int((verified["status"] == s).sum()) for s in ("ok", "no_answer", "timeout", "error")})
    cfg = ctx.recipe.verify
    counts.update(verifier=cfg.verifier, verifier_version=make_verifier(cfg.verifier, cfg.options).version())
    return counts


def build_stage(ctx: StageContext) -> dict:
    """Build positives, pairs, rl prompts, demonstrations and stats.json into build/."""
    prompts = pl.read_parquet(ctx.inputs["prompts"] / "prompts.parquet")
    if "verify" in ctx.inputs:
        verified = pl.read_parquet(ctx.inputs["verify"] / "verified.parquet")
        positives = build_positives(verified, prompts, ctx.recipe.build)
        pairs = build_pairs(verified, prompts, ctx.recipe.build, ctx.recipe.run.seed)
        stats = build_stats(verified, positives, pairs, ctx.recipe.build)
    else:  # no sampling in this recipe: only demonstrations and RL prompts
        positives, pairs = pl.DataFrame(schema=POSITIVE_SCHEMA), pl.DataFrame(schema=PAIR_SCHEMA)
        stats = {"samples": 0, "positives": 0, "pairs": 0}
    rl_prompts = build_rl_prompts(prompts)
    demos = build_demonstrations(prompts)
    stats.update({"rl_prompts": len(rl_prompts), "demonstrations": len(demos)})
    positives.write_parquet(ctx.out / "positives.parquet")
    pairs.write_parquet(ctx.out / "pairs.parquet")
    rl_prompts.write_parquet(ctx.out / "rl_prompts.parquet")
    demos.write_parquet(ctx.out / "demonstrations.parquet")
    (ctx.out / "stats.json").write_text(json.dumps(stats, indent=2) + "\n")
    if console.is_terminal:
        print_stats(stats)
    elif shown := [f"{k}={stats[k]:.4g}" for k in ("share_correct", "pass@1", "pass@4") if k in stats]:
        console.print(f"build stats: {', '.join(shown)} (all: stats.json)")  # a log keeps one line
    return {"positives": len(positives), "pairs": len(pairs), "rl_prompts": len(rl_prompts),
            "demonstrations": len(demos)}
