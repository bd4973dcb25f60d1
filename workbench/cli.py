"""`workbench`: run a recipe end to end, or one stage of it, and list the registered plugins.

    workbench run [RECIPE] [--out DIR] [--set key.path=value ...] [--dry-run] [--force]
    workbench generate|verify|build|train|evaluate|report [RECIPE] ...   (that stage and what it needs)
    workbench report RUN_DIR [--open]         (where a finished run's page is: report/index.html)
    workbench compare RUN_A RUN_B [...] [--html FILE]   (runs side by side, paired where they can be)
    workbench evaluate --model PATH_OR_ID --benchmarks a,b --k K --out DIR   (any model, no recipe)
    workbench verify-file IN OUT
    workbench check [RECIPE] [--out DIR]     (every finished stage's files against its manifest)
    workbench algorithms | benchmarks | verifiers
    workbench export RUN_DIR --to DIR         (TRL-ready parquet data sets with a dataset card)

Every command fails with one line naming the field, file or row (`main`); WORKBENCH_DEBUG=1 shows the
traceback instead.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import typer
from rich.table import Table

from workbench.console import readable
from workbench.recipe import RecipeError, load_recipe
from workbench.registry import BENCHMARKS, TRAINERS, VERIFIERS, broken_plugins, plugins
from workbench.rundir import NOT_RUN, RunDir

DEFAULT_RECIPE = "recipes/quickstart.yaml"
app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Offline-RL comparison workbench: DFT against RL baselines on identical data.")
console = readable()  # one line per message, also in a log file

RecipeArg = typer.Argument(None, help=f"Recipe YAML (default: {DEFAULT_RECIPE}).")
OutOpt = typer.Option(None, "--out", help="Run directory (default: <run.out_dir>/<run.name>).")
SetOpt = typer.Option(None, "--set", help="Override a recipe field: key.path=value (repeatable).")
SeedsOpt = typer.Option(None, "--seeds", help="Training/evaluation seeds, e.g. 0,1,2 (overrides run.seeds).")


def with_seeds(overrides: list[str] | None, seeds: str | None) -> list[str]:
    """`--seeds 0,1,2` as the override `run.seeds=[0,1,2]` after the `--set` ones."""
    return [*(overrides or []), *([f"run.seeds=[{seeds}]"] if seeds else [])]
DryOpt = typer.Option(False, "--dry-run", help="Print the stage plan, what is cached and the memory plan; run "
                      "nothing.")
ForceOpt = typer.Option(False, "--force", help="Run even when the memory plan says an entry cannot fit.")


def fail(message: str) -> None:
    console.print(f"[red]error:[/] {message}", highlight=False, soft_wrap=True)  # one line, never wrapped
    raise typer.Exit(2)


def one_line(exc: BaseException) -> str:
    """An exception as one line: a Ray task error's cause, a pydantic error's field, else the first line."""
    from pydantic import ValidationError

    exc = getattr(exc, "cause", None) or exc
    if isinstance(exc, ValidationError):
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or "(top level)"
        return f"{exc.title}.{field}: {err['msg']}, got {err.get('input')!r}"
    lines = str(exc).strip().splitlines()
    text = lines[0] if lines else ""
    if not isinstance(exc, (ValueError, OSError, LookupError, RuntimeError)) or not text:
        text = f"{type(exc).__name__}: {text}".rstrip(": ")  # not a message written for users: say what
    return text


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
        why = pipe.reasons.get(stage.name, "")
        table.add_row(stage.name, ", ".join(stage.deps) or "-",
                      "[green]cached[/]" if done else f"[yellow]to run[/] {'' if why == NOT_RUN else why}")
    console.print(table)
    from workbench.budget import budget_lines

    for line in budget_lines(pipe.recipe):  # each train entry's planned budget (budget.match: samples)
        console.print(line, highlight=False, soft_wrap=True)
    from workbench.memory_plan import gpu_memory_gb, plan_lines

    for line in plan_lines(pipe.recipe, gpu_gb=gpu_memory_gb(pipe.recipe)):  # per GPU / process, in parts
        console.print(line, highlight=False, soft_wrap=True)


def _run(recipe, out, overrides, dry_run, upto, force=False):
    from workbench.lock import RunDirLocked
    from workbench.pipeline import StageNotAvailable

    pipe = _pipeline(recipe, out, overrides)
    pipe.force = force  # run past the memory plan's refusals
    if dry_run:
        _print_plan(pipe, upto)
        return
    try:
        pipe.run(upto)
    except RunDirLocked as exc:
        fail(str(exc))
    except (StageNotAvailable, ValueError, OSError, RuntimeError) as exc:
        if os.environ.get("WORKBENCH_DEBUG"):
            raise
        # Stages raise one-line errors naming the file, row or key; finished stages stay cached.
        fail(f"{one_line(exc)} (finished stages are kept; WORKBENCH_DEBUG=1 shows the traceback)")
    if upto in (None, "report"):
        report_dir = pipe.rundir.path("report")
        table = report_dir / "table2.md"
        if table.is_file():
            console.print(table.read_text())
            for name in ("table2.md", "table2.csv", "table2.png", "costs.csv"):
                if (report_dir / name).exists():
                    console.print(f"  {report_dir / name}")
            if (report_dir / "index.html").is_file():  # the last line: where the page is
                console.print(f"report page: {(report_dir / 'index.html').resolve()}", highlight=False,
                              soft_wrap=True)


@app.command()
def run(recipe: str | None = RecipeArg, out: Path | None = OutOpt,
        set_: list[str] | None = SetOpt, dry_run: bool = DryOpt, seeds: str | None = SeedsOpt,
        force: bool = ForceOpt):
    """Run the whole recipe: data generation, every trainer, evaluation and the report."""
    _run(recipe, out, with_seeds(set_, seeds), dry_run, None, force)


def _stage_command(step: str, doc: str):
    def command(recipe: str | None = RecipeArg, out: Path | None = OutOpt,
                set_: list[str] | None = SetOpt, dry_run: bool = DryOpt, seeds: str | None = SeedsOpt,
                force: bool = ForceOpt):
        _run(recipe, out, with_seeds(set_, seeds), dry_run, step, force)

    command.__doc__ = doc
    app.command(name=step)(command)


for _step, _doc in [("generate", "Sample responses from the base model (and the prompts stage before it)."),
                    ("verify", "Grade the samples with math-verify."),
                    ("build", "Build positives, DPO pairs, RL prompts and demonstrations."),
                    ("train", "Train every algorithm of the recipe on the built data.")]:
    _stage_command(_step, _doc)


@app.command()
def report(recipe: str | None = typer.Argument(None, help=f"Recipe YAML (default: {DEFAULT_RECIPE}), or a "
                                               "finished run directory (then nothing runs)."),
           out: Path | None = OutOpt, set_: list[str] | None = SetOpt, dry_run: bool = DryOpt,
           seeds: str | None = SeedsOpt,
           open_: bool = typer.Option(False, "--open", help="Open report/index.html in a browser.")):
    """Write the Table 2 report and its page (running whatever it still needs); name or open the page."""
    from evaluators.page import open_page, page_for

    if recipe and Path(recipe).is_dir():
        page = page_for(Path(recipe))
        print(f"report page: {page.resolve()}")
    else:
        _run(recipe, out, with_seeds(set_, seeds), dry_run, "report")  # its last line names the page
        if dry_run or not open_:
            return
        page = page_for(out or load_recipe(recipe or DEFAULT_RECIPE, with_seeds(set_, seeds)).run_dir)
    if open_ and not open_page(page):
        print("no browser to open it here (no display); open the file above, or copy it: it is self-contained")


@app.command()
def evaluate(recipe: str | None = RecipeArg, out: Path | None = OutOpt,
             set_: list[str] | None = SetOpt, dry_run: bool = DryOpt, seeds: str | None = SeedsOpt,
             model: str | None = typer.Option(None, help="Evaluate this model alone (no recipe)."),
             benchmarks: str = typer.Option("toy-id", help="Comma-separated benchmarks (with --model)."),
             k: int = typer.Option(16, help="Samples per problem (with --model)."),
             limit: int | None = typer.Option(None, help="First N problems per benchmark (with --model)."),
             engine: str = typer.Option("auto", help="auto, vllm or hf (with --model)."),
             max_tokens: int | None = typer.Option(None, help="Most new tokens (with --model; "
                                                      "default 4096, 128 for toy models)."),
             template: str | None = typer.Option(None, help="A named prompt template (with --model), e.g. "
                                                 "qwen-boxed, the paper authors' evaluation prompt.")):
    """Evaluate the base model and every checkpoint of a recipe, or one --model on --benchmarks."""
    if model is None:
        _run(recipe, out, with_seeds(set_, seeds), dry_run, "eval")
        return
    from evaluators.evaluate import evaluate_standalone, render_summary
    from workbench.template import template_preset

    try:
        chosen = template_preset(template) if template else None
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--template") from None
    summary = evaluate_standalone(model, [b for b in benchmarks.split(",") if b], k,
                                  out or Path("runs/evaluate"), limit, chosen, engine, max_tokens=max_tokens)
    print(render_summary(summary))


@app.command("verify-file")
def verify_file(src: Path = typer.Argument(..., help="jsonl or parquet with `response` and `answer`."),
                dst: Path = typer.Argument(..., help="Output jsonl or parquet (adds correct, pred, status)."),
                timeout_s: float = typer.Option(5.0, help="Per-sample timeout."),
                verifier: str = typer.Option("math", help="A registered verifier (see `workbench verifiers`).")):
    """Grade any file of responses against gold answers with the pipeline's verifier."""
    from data_gen.config import VerifyConfig
    from data_gen.verifier import verify_file as run_verify

    if not src.is_file():
        fail(f"{src}: file not found")
    counts = run_verify(src, dst, VerifyConfig(timeout_s=timeout_s, verifier=verifier))
    console.print(counts)


@app.command()
def check(recipe: str | None = RecipeArg, out: Path | None = OutOpt):
    """Verify every finished stage of a run directory against its manifest; exit 1 naming each bad file."""
    if out is None:
        try:
            out = load_recipe(recipe or DEFAULT_RECIPE).run_dir
        except RecipeError as exc:
            fail(str(exc))
    if not out.is_dir():
        fail(f"{out}: no such run directory")
    report = RunDir(out).check_all()
    if not report:
        fail(f"{out}: no finished stage to check (no manifest.json below it)")
    for stage, problems in report.items():
        print(f"{'ok ' if not problems else 'BAD'} {stage}")
    bad = [p for problems in report.values() for p in problems]
    for problem in bad:
        print(f"bad file: {problem}")
    if bad:
        console.print(f"[red]error:[/] {out}: {len(bad)} bad file(s) in "
                      f"{sum(bool(p) for p in report.values())} stage(s); a rerun redoes those stages",
                      highlight=False, soft_wrap=True)
        raise typer.Exit(1)
    print(f"{out}: {len(report)} stage(s), every output matches its manifest")


@app.command()
def compare(runs: list[Path] = typer.Argument(..., help="Two or more finished run directories; the first is "
                                              "the reference."),
            html: Path | None = typer.Option(None, "--html", help="Also write the comparison as one "
                                             "self-contained HTML page here."),
            samples: int = typer.Option(2000, help="Bootstrap resamples for the paired differences.")):
    """Runs side by side: shared methods x benchmarks, each run's score, paired differences from the first."""
    from evaluators.compare import compare_runs, render_html

    text, loaded = compare_runs(runs, samples)
    print(text, end="")
    if html is not None:
        html.parent.mkdir(parents=True, exist_ok=True)
        html.write_text(render_html(text, loaded), encoding="utf-8")
        print(f"comparison page: {html.resolve()}")


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


@app.command("verifiers")
def list_verifiers():
    """List registered verifiers, one per line: name, options, what it checks."""
    for name, obj in sorted(plugins(VERIFIERS).items()):
        doc = (obj.__doc__ or "").strip().splitlines()
        options = ",".join(obj.Config.model_fields) or "-"
        print(f"{name}\toptions: {options}\t{doc[0] if doc else ''}".rstrip())
    for name, why in sorted(broken_plugins(VERIFIERS).items()):
        print(f"{name}\tBROKEN: {why}", file=sys.stderr)


@app.command()
def export(run_dir: Path = typer.Argument(..., help="A run directory with a finished build stage."),
           to: Path = typer.Option(..., "--to", help="Folder to write the export into (created)."),
           model: str | None = typer.Option(None, help="Base model folder or id for the chat template, when "
                                             "the run directory does not record it.")):
    """Export a run's data sets for TRL (prompt-completion, preference, RL prompts) with a dataset card."""
    import shlex

    from data_gen.export import export_run

    command = shlex.join(["workbench", "export", str(run_dir), "--to", str(to), *(["--model", model] if model else [])])
    written = export_run(run_dir, to, model=model, command=command)
    for name, rows in written.items():
        print(f"{name}\t{rows} rows")
    print(f"{to}/README.md (dataset card); load with datasets.load_dataset({str(to)!r}, <config>)")


def _usage_errors() -> tuple[type, ...]:
    """Click's usage errors: typer >= 0.20 raises its own vendored click's, older typer plain click's."""
    errors = [getattr(typer, "TyperException", None)]
    try:
        import click

        errors.append(click.ClickException)
    except ImportError:
        pass
    return tuple(e for e in errors if e is not None)


def main() -> None:
    """The console script: `app`, with every error as one line (`WORKBENCH_DEBUG=1` shows the traceback)."""
    try:
        code = app(standalone_mode=False)
    except _usage_errors() as exc:  # bad arguments or options
        if type(exc).__name__ == "NoArgsIsHelpError":  # plain `workbench`: the help
            print(exc.format_message())
            sys.exit(2)
        where = exc.ctx.command_path if getattr(exc, "ctx", None) else "workbench"
        console.print(f"[red]error:[/] {where}: {' '.join(exc.format_message().split())} (see --help)",
                      highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except typer.Abort:
        sys.exit(130)
    except Exception as exc:  # the one place every command's failure becomes one line
        if os.environ.get("WORKBENCH_DEBUG"):
            raise
        console.print(f"[red]error:[/] {one_line(exc)} (WORKBENCH_DEBUG=1 shows the traceback)",
                      highlight=False, soft_wrap=True)
        sys.exit(1)
    sys.exit(code or 0)


if __name__ == "__main__":
    main()
