"""The one evaluator: score a model on benchmarks the way the paper does (Average@k).

For one model: load every benchmark, render each problem with the recipe's one prompt template, sample
k responses per problem with the data-generation sampler (all benchmarks in ONE `sample` call, so the
engine starts once per model), grade every response with the data-generation verifier, and write

    <out_dir>/<benchmark>.parquet   per sample: problem_id, sample_idx, response, num_tokens,
                                    finish_reason, answer, correct, pred, status
    <out_dir>/summary.parquet       per benchmark: model, benchmark, n_problems, k, avg_at_k,
                                    pass_at_k, maj_at_k, ci_low, ci_high (fractions in [0, 1])

The per-sample files keep everything needed to recompute any metric without sampling again
(`summarize_folder`).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import polars as pl

from data_gen.config import VerifyConfig
from evaluators.benchmarks import get_benchmark
from evaluators.config import BenchmarkRef, EvaluateConfig
from evaluators.metrics import summarize
from workbench.template import TemplateConfig

SAMPLE_COLUMNS = ["problem_id", "sample_idx", "response", "num_tokens", "finish_reason", "answer",
                  "correct", "pred", "status"]
SUMMARY_SCHEMA = {"model": pl.Utf8, "benchmark": pl.Utf8, "n_problems": pl.Int64, "k": pl.Int64,
                  "avg_at_k": pl.Float64, "pass_at_k": pl.Float64, "maj_at_k": pl.Float64,
                  "ci_low": pl.Float64, "ci_high": pl.Float64}


def benchmark_refs(benchmarks: list, default_limit: int | None = None) -> list[BenchmarkRef]:
    """Normalise names / dicts / BenchmarkRefs to BenchmarkRefs; the recipe-wide limit fills gaps."""
    refs = []
    for item in benchmarks:
        if isinstance(item, str):
            ref = BenchmarkRef(name=item)
        elif isinstance(item, dict):
            ref = BenchmarkRef.model_validate(item)
        else:
            ref = item
        if ref.limit is None and default_limit is not None:
            ref = ref.model_copy(update={"limit": default_limit})
        refs.append(ref)
    names = [r.name for r in refs]
    if len(set(names)) != len(names):
        raise ValueError(f"evaluate.benchmarks: a benchmark is listed twice ({names})")
    return refs


def load_benchmarks(refs: list[BenchmarkRef]) -> dict[str, pl.DataFrame]:
    """{name: problems frame} for every benchmark reference, in order."""
    return {ref.name: get_benchmark(ref.name).load(ref.path, ref.limit) for ref in refs}


def summarize_folder(folder: Path, model_name: str, benchmarks: list[str], k: int,
                     bootstrap_samples: int = 1000, seed: int = 0) -> pl.DataFrame:
    """Recompute the summary rows from the per-sample parquet files in `folder`."""
    rows = []
    for name in benchmarks:
        samples = pl.read_parquet(Path(folder) / f"{name}.parquet")
        rows.append({"model": model_name, "benchmark": name,
                     **summarize(samples, k, bootstrap_samples, seed)})
    return pl.DataFrame(rows, schema=SUMMARY_SCHEMA)


def evaluate_model(model: str, benchmarks: list, cfg: EvaluateConfig, template: TemplateConfig,
                   out_dir: Path, model_name: str, seed: int,
                   verify: VerifyConfig | None = None) -> pl.DataFrame:
    """Evaluate one model (a local folder or hub id) on `benchmarks`; returns the summary frame.

    `verify` sets the grading timeout and Ray chunking (the recipe's `verify` section); default settings
    when omitted.
    """
    problems = load_benchmarks(benchmark_refs(benchmarks, cfg.limit))
    return evaluate_problems(model, problems, cfg, template, out_dir, model_name, seed, verify)


def evaluate_problems(model: str, problems: dict[str, pl.DataFrame], cfg: EvaluateConfig,
                      template: TemplateConfig, out_dir: Path, model_name: str, seed: int,
                      verify: VerifyConfig | None = None, engines: list | None = None) -> pl.DataFrame:
    """`evaluate_model` on problem frames already loaded: {name: frame of problem_id, problem, answer}
    (e.g. the validation split of a sweep, which is no registered benchmark). `engines`: running engine
    actors holding this model (`data_gen.engines.start_engines`), reused instead of starting new ones."""
    from data_gen.engines import sample
    from data_gen.samplers import render_prompts
    from data_gen.verifiers.frame import verify_benchmarks

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    # One sampling call for all benchmarks: the engine starts once for this model.
    all_problems = pl.concat([df.with_columns(pl.lit(name).alias("benchmark")) for name, df in problems.items()])
    prompts = render_prompts(model, all_problems["problem"].to_list(), template)
    shards = eval_shards(out_dir, model, prompts, cfg, seed)  # a killed evaluation resumes from these
    completions = sample(model, prompts, cfg, n=cfg.k, seed=seed, desc=f"evaluate {model_name}",
                         engines=engines, shards=shards, log_dir=out_dir)  # engine output: out_dir/engine.log

    rows = {"benchmark": [], "problem_id": [], "sample_idx": [], "response": [], "num_tokens": [],
            "finish_reason": [], "answer": []}
    for problem, samples in zip(all_problems.iter_rows(named=True), completions):
        for idx, c in enumerate(samples):
            rows["benchmark"].append(problem["benchmark"])
            rows["problem_id"].append(problem["problem_id"])
            rows["sample_idx"].append(idx)
            rows["response"].append(c.text)
            rows["num_tokens"].append(int(c.num_tokens))
            rows["finish_reason"].append(c.finish_reason)
            rows["answer"].append(problem["answer"])
    frame = pl.DataFrame(rows, schema_overrides={"sample_idx": pl.Int64, "num_tokens": pl.Int64})
    graded = verify_benchmarks(frame, verify or VerifyConfig())  # each benchmark with the verifier it names

    for name in problems:
        per_sample = graded.filter(pl.col("benchmark") == name).select(SAMPLE_COLUMNS)
        per_sample.write_parquet(out_dir / f"{name}.parquet")
    summary = summarize_folder(out_dir, model_name, list(problems), cfg.k, cfg.bootstrap_samples, seed)
    summary.write_parquet(out_dir / "summary.parquet")
    shutil.rmtree(shards.folder, ignore_errors=True)  # scratch: the per-sample files hold every response
    return summary


def eval_shards(out_dir: Path, model: str, prompts: list[str], cfg: EvaluateConfig, seed: int):
    """The sampling shards of one evaluation, in a folder named by what they depend on (the model's content,
    the rendered prompts, the sampling settings, the seed), so a rerun into the same folder -- a killed
    eval stage, or `workbench evaluate --out DIR` again -- reuses only shards of this very evaluation."""
    from data_gen.shards import ShardStore
    from workbench.models import model_fingerprint
    from workbench.rundir import stable_hash

    identity = model_fingerprint(model) if Path(model).is_dir() else model
    key = stable_hash([identity, prompts, cfg.model_dump(mode="json"), seed])
    return ShardStore(Path(out_dir) / f".shards-{key}")


def evaluate_standalone(model: str, benchmarks: list[str], k: int, out: Path, limit: int | None = None,
                        template: TemplateConfig | None = None, engine: str = "auto",
                        seed: int = 0, max_tokens: int | None = None) -> pl.DataFrame:
    """`workbench evaluate --model M --benchmarks a,b --k K --out DIR`: any model, no recipe.

    `model` is anything `workbench.models.resolve_model` accepts (toy:..., smollm2-135m, a folder, a hub
    id). A toy model gets the toy template unless one is given, and 128 new tokens unless `max_tokens`
    says otherwise (its context is 512 tokens); other models get the default template and 4096 tokens.
    """
    from workbench.models import resolve_model, toy_template

    if template is None:
        template = toy_template() if str(model).startswith("toy:") else TemplateConfig()
    fields = {"benchmarks": list(benchmarks), "k": k, "limit": limit, "engine": engine}
    if max_tokens is None and str(model).startswith("toy:"):
        max_tokens = 128
    if max_tokens is not None:
        fields["max_tokens"] = max_tokens
    cfg = EvaluateConfig(**fields)
    path = resolve_model(model)
    name = Path(path).name if Path(path).is_dir() and not str(model).startswith("toy:") else str(model)
    return evaluate_model(path, cfg.benchmarks, cfg, template, Path(out), name, seed)


def render_summary(summary: pl.DataFrame) -> str:
    """A summary frame as a markdown table in percent (what `workbench evaluate` prints)."""
    lines = ["| benchmark | problems | k | Average@k | 95% CI | pass@k | maj@k |",
             "| --- | ---: | ---: | ---: | --- | ---: | ---: |"]
    for r in summary.iter_rows(named=True):
        lines.append(f"| {r['benchmark']} | {r['n_problems']} | {r['k']} | {100 * r['avg_at_k']:.2f} | "
                     f"[{100 * r['ci_low']:.2f}, {100 * r['ci_high']:.2f}] | {100 * r['pass_at_k']:.2f} | "
                     f"{100 * r['maj_at_k']:.2f} |")
    return "\n".join(lines)
