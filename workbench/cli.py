"""`workbench`: run a recipe end to end, or one stage of it, and list the registered plugins.

    workbench run [RECIPE] [--out DIR] [--set key.path=value ...] [--dry-run]
    workbench generate|verify|build|train|evaluate|report [RECIPE] ...   (that stage and what it needs)
    workbench evaluate --model PATH_OR_ID --benchmarks a,b --k K --out DIR   (any model, no recipe)
    workbench verify-file IN OUT
    workbench algorithms | benchmarks
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from workbench.recipe import RecipeError, load_recipe
from workbench.registry import BENCHMARKS, TRAINERS, broken_plugins, plugins

DEFAULT_RECIPE = "recipes/quickstart.yaml"
app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Offline-RL comparison workbench: DFT against RL baselines on identical data.")
console = Console()

RecipeArg = typer.Argument(None, help=f"Recipe YAML (default: {DEFAULT_RECIPE}).")
OutOpt = typer.Option(None, "--out", help="Run directory (default: <run.out_dir>/<run.name>).")
SetOpt = typer.Option(None, "--set", help="Override a recipe field: key.path=value (repeatable).")
DryOpt = typer.Option(False, "--dry-run", help="Print the stage plan and what is cached; run nothing.")


def fail(message: str) -> None:
    console.print(f"[red]error:[/] {message}", highlight=False)
    raise typer.Exit(2)


def _pipeline(recipe_path, out, overrides):
    from workbench.pipeline import Pipeline

    try:
        recipe = load_recipe(recipe_path or DEFAULT_RECIPE, overrides or [])
    except RecipeError as exc:
        fail(str(exc))
    return Pipeline(recipe, out)


def _print_plan(pipe, upto) -> None:
    table = Table(title=f"plan: {pipe.recipe.run.name} -> {pipe.rundir.root}")
    for col in ("stage", "needs", "status"):
        table.add_column(col)
    for stage, done in pipe.status(upto):
        table.add_row(stage.name, ", ".join(stage.deps) or "-",
                      "[green]cached[/]" if done else "[yellow]to run[/]")
    console.print(table)


def _run(recipe, out, overrides, dry_run, upto):
    from workbench.pipeline import StageNotAvailable

    pipe = _pipeline(recipe, out, overrides)
    if dry_run:
        _print_plan(pipe, upto)
        return
    try:
        pipe.run(upto)
    except (StageNotAvailable, ValueError, FileNotFoundError, RuntimeError) as exc:
        if os.environ.get("WORKBENCH_DEBUG"):
            raise
        # Stages raise one-line errors naming the file, row or key; finished stages stay cached.
        fail(f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__} "
             "(finished stages are kept; WORKBENCH_DEBUG=1 shows the traceback)")
    if upto in (None, "report"):
        report_dir = pipe.rundir.path("report")
        table = report_dir / "table2.md"
        if table.is_file():
            console.print(table.read_text())
            for name in ("table2.md", "table2.csv", "table2.png", "costs.csv"):
                if (report_dir / name).exists():
                    console.print(f"  {report_dir / name}")


@app.command()
def run(recipe: str | None = RecipeArg, out: Path | None = OutOpt,
        set_: list[str] | None = SetOpt, dry_run: bool = DryOpt):
    """Run the whole recipe: data generation, every trainer, evaluation and the report."""
    _run(recipe, out, set_, dry_run, None)


def _stage_command(step: str, doc: str):
    def command(recipe: str | None = RecipeArg, out: Path | None = OutOpt,
                set_: list[str] | None = SetOpt, dry_run: bool = DryOpt):
        _run(recipe, out, set_, dry_run, step)

    command.__doc__ = doc
    app.command(name=step)(command)


for _step, _doc in [("generate", "Sample responses from the base model (and the prompts stage before it)."),
                    ("verify", "Grade the samples with math-verify."),
                    ("build", "Build positives, DPO pairs, RL prompts and demonstrations."),
                    ("train", "Train every algorithm of the recipe on the built data."),
                    ("report", "Write the Table 2 report (running whatever it still needs).")]:
    _stage_command(_step, _doc)


@app.command()
def evaluate(recipe: str | None = RecipeArg, out: Path | None = OutOpt,
             set_: list[str] | None = SetOpt, dry_run: bool = DryOpt,
             model: str | None = typer.Option(None, help="Evaluate this model alone (no recipe)."),
             benchmarks: str = typer.Option("toy-id", help="Comma-separated benchmarks (with --model)."),
             k: int = typer.Option(16, help="Samples per problem (with --model)."),
             limit: int | None = typer.Option(None, help="First N problems per benchmark (with --model)."),
             engine: str = typer.Option("auto", help="auto, vllm or hf (with --model)."),
             max_tokens: int | None = typer.Option(None, help="Most new tokens (with --model; "
                                                      "default 4096, 128 for toy models).")):
    """Evaluate the base model and every checkpoint of a recipe, or one --model on --benchmarks."""
    if model is None:
        _run(recipe, out, set_, dry_run, "eval")
        return
    from evaluators.evaluate import evaluate_standalone, render_summary

    summary = evaluate_standalone(model, [b for b in benchmarks.split(",") if b], k,
                                  out or Path("runs/evaluate"), limit, None, engine, max_tokens=max_tokens)
    print(render_summary(summary))


@app.command("verify-file")
def verify_file(src: Path = typer.Argument(..., help="jsonl or parquet with `response` and `answer`."),
                dst: Path = typer.Argument(..., help="Output jsonl or parquet (adds correct, pred, status)."),
                timeout_s: float = typer.Option(5.0, help="Per-sample timeout.")):
    """Grade any file of responses against gold answers with the pipeline's verifier."""
    from data_gen.config import VerifyConfig
    from data_gen.verifier import verify_file as run_verify

    if not src.is_file():
        fail(f"{src}: file not found")
    counts = run_verify(src, dst, VerifyConfig(timeout_s=timeout_s))
    console.print(counts)


def _list(group: str) -> None:
    for name, obj in sorted(plugins(group).items()):
        doc = (getattr(obj, "__doc__", None) or "").strip().splitlines()
        extra = f"consumes {obj.consumes}" if group == TRAINERS else getattr(obj, "description", "")
        print(f"{name}\t{extra}\t{doc[0] if doc and group == TRAINERS else ''}".rstrip())
    for name, why in sorted(broken_plugins(group).items()):
        print(f"{name}\tBROKEN: {why}", file=sys.stderr)


@app.command()
def algorithms():
    """List registered trainers, one per line, name first."""
    _list(TRAINERS)


@app.command("benchmarks")
def list_benchmarks():
    """List registered benchmarks, one per line, name first."""
    _list(BENCHMARKS)


if __name__ == "__main__":
    app()
