"""The single controller: plans the stages of a recipe, skips the cached ones and runs the rest on Ray.

    prompts -> generate -> verify -> build -> train/<entry> ... -> eval/base, eval/<entry> ... -> report

With `run.seeds: [0, 1, 2]` the data stages run once and every train and eval stage once per seed
(`train/dft@s1`, `eval/base@s1`; `run.seed`'s own stages keep the plain names `train/dft`, `eval/base`, so
adding seeds to a finished one-seed run reuses its stages: same config, same hash, same folder). A train entry with a `sweep:` adds
`validation`, `trial/<entry>/<j>` and `tune/<entry>` before its training (workbench/sweep.py).

Stage functions live with the code they run (data_gen/stages.py, workbench/train_stage.py,
evaluators/stages.py). Each stage's `input_hash` covers its own slice of the recipe plus the hashes of
its inputs, so changing `generate.temperature` reruns generate, verify, build, train, eval and report,
but not prompts.
"""

from __future__ import annotations

import importlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from workbench.console import quiet_local_ray, readable
from workbench.lock import RunLock
from workbench.models import model_fingerprint, resolve_model, toy_identity
from workbench.recipe import LAUNCH_FIELDS, Recipe
from workbench.rundir import CHANGED, NOT_RUN, RunDir, read_manifest, stable_hash
from workbench.stage import StageContext

console = readable()  # one line per summary, also in a log file

# Where each stage's function lives: "module:function". Imported only when the stage runs.
STAGE_FUNCTIONS = {
    "prompts": "data_gen.stages:prompts_stage",
    "generate": "data_gen.stages:generate_stage",
    "verify": "data_gen.stages:verify_stage",
    "build": "data_gen.stages:build_stage",
    "train": "workbench.train_stage:run_train_stages",  # all entries at once, in parallel
    "validation": "workbench.sweep:validation_stage",  # held-out prompts for sweeps
    "trial": "workbench.train_stage:run_train_stages",  # all sweep trials at once
    "tune": "workbench.sweep:tune_stage",  # one entry's trials scored on the validation split
    "eval": "evaluators.stages:evaluate_stage",
    "report": "evaluators.stages:report_stage",
}
STEP_ORDER = ["prompts", "generate", "verify", "build", "train", "eval", "report"]


PROPAGATED = "built from "  # the reason of a stage that reruns because one it depends on does


class StageNotAvailable(RuntimeError):
    pass


@dataclass
class Stage:
    name: str  # "prompts", "train/dft", "eval/base", ...
    kind: str  # a key of STAGE_FUNCTIONS
    deps: list[str]
    config: dict  # the slice of the recipe this stage depends on
    extra: dict = field(default_factory=dict)
    input_hash: str = ""


def stage_function(kind: str) -> Callable[[StageContext], dict]:
    target = STAGE_FUNCTIONS[kind]
    if callable(target):  # tests and embedding programs may register a function directly
        return target
    module, func = target.split(":")
    try:
        return getattr(importlib.import_module(module), func)
    except (ImportError, AttributeError) as exc:
        raise StageNotAvailable(
            f"stage '{kind}' is not available: {target} could not be loaded ({exc})"
        ) from None


def model_identity(spec: str) -> str:
    """What a base model contributes to hashes: a local folder's content fingerprint, a shipped toy model's
    name and fingerprint, else its name."""
    if str(spec).startswith("toy:"):
        return toy_identity(spec)
    return model_fingerprint(spec) if is_local_folder(spec) else spec


def needs_samples(recipe: Recipe) -> bool:
    """Sample from the base model unless every train entry consumes demonstrations or prompts only."""
    from workbench.registry import get_trainer
    from workbench.train_stage import data_kind

    if not recipe.train:
        return True  # no trainer: the run is about the data set (and the base model's pass@k)
    kinds = {data_kind(get_trainer(e.algorithm), e.config) for e in recipe.train}
    return bool(kinds & {"positives", "pairs"})


def reward_config(recipe: Recipe, i: int, dump: dict) -> dict:
    """What an online entry (consumes prompts) hashes besides its own config: the verifier that is its reward,
    so changing `verify.verifier` or its options retrains GRPO/PPO (offline entries see it through `build`)."""
    from workbench.registry import get_trainer
    from workbench.train_stage import data_kind

    entry = recipe.train[i]
    if data_kind(get_trainer(entry.algorithm), entry.config) != "prompts":
        return {}
    return {"reward": {k: dump["verify"].get(k) for k in ("verifier", "options")}}


def plan(recipe: Recipe) -> list[Stage]:
    """Every stage of the recipe in run order, with its dependencies and hashed config slice."""
    dump = recipe.model_dump(mode="json")
    seed = recipe.run.seed
    model = model_identity(recipe.model)
    stages = [Stage("prompts", "prompts", [], {"prompts": dump["prompts"], "seed": seed})]
    if needs_samples(recipe):
        stages += [
            Stage("generate", "generate", ["prompts"],
                  {"model": model, "template": dump["template"], "generate": dump["generate"], "seed": seed}),
            Stage("verify", "verify", ["generate", "prompts"], {"verify": dump["verify"]}),
            Stage("build", "build", ["verify", "prompts"], {"build": dump["build"], "seed": seed}),
        ]
    else:  # e.g. Table 1: only demonstrations and RL prompts, no sampling from the base model
        stages.append(Stage("build", "build", ["prompts"], {"build": dump["build"], "seed": seed}))
    seeds = recipe.run.seed_list  # run.seed keeps a one-seed run's names (train/dft), the others get @s<seed>
    at = {s: "" if s == seed else f"@s{s}" for s in seeds}
    train_cfgs = [{"model": model, "template": dump["template"],
                   "entry": {k: v for k, v in dump["train"][i].items()  # where/how it runs: not hashed
                             if not (k == "sweep" and v is None) and k not in LAUNCH_FIELDS},
                   **reward_config(recipe, i, dump)}
                  for i in range(len(recipe.train))]
    if any(e.sweep for e in recipe.train):  # every trial first, then tune/<entry> picks the values
        from workbench.sweep import sweep_stages, validation_config

        stages.append(Stage("validation", "validation", ["prompts"], validation_config(recipe)))
        for i, entry in enumerate(recipe.train):
            stages += sweep_stages(recipe, i, train_cfgs[i], Stage) if entry.sweep else []
    for i, entry in enumerate(recipe.train):
        tune = [f"tune/{entry.name}"] if entry.sweep else []
        for s in seeds:
            stages.append(Stage(f"train/{entry.name}{at[s]}", "train", ["build", *tune],
                                {**train_cfgs[i], "seed": s}, extra={"entry_index": i, "seed": s, "tune": tune[0] if tune else None}))
    eval_cfg = {"template": dump["template"], "evaluate": dump["evaluate"], "verify": dump["verify"]}
    runs = {"base": {s: (None, f"eval/base{at[s]}") for s in seeds}}
    runs.update({e.name: {s: (f"train/{e.name}{at[s]}", f"eval/{e.name}{at[s]}") for s in seeds}
                 for e in recipe.train})
    for name, by_seed in runs.items():
        for s, (train, ev) in by_seed.items():
            stages.append(Stage(ev, "eval", [train] if train else [],
                                {**eval_cfg, "seed": s, **({"model": model} if train is None else {})},
                                extra={"model_name": name, "seed": s, "train_stage": train}))
    report_deps = ["generate"] if needs_samples(recipe) else []
    report_deps += [f"tune/{e.name}" for e in recipe.train if e.sweep]
    report_deps += [t for by_seed in runs.values() for t, _ in by_seed.values() if t]
    report_deps += [ev for by_seed in runs.values() for _, ev in by_seed.values()]
    if recipe.report.token_probs_rows:  # Figure 2 scores rows of the training data
        report_deps.append("build")
    report_cfg = {"report": dump["report"], "rows": [e.name for e in recipe.train]}
    if len(seeds) > 1:
        report_cfg["seeds"] = seeds
    stages.append(Stage("report", "report", report_deps, report_cfg, extra={"runs": runs}))
    by_name = {}
    for stage in stages:  # hashes chain through dependencies, in run order
        stage.input_hash = stable_hash({"config": stage.config,
                                        "deps": {d: by_name[d].input_hash for d in stage.deps}})
        by_name[stage.name] = stage
    return stages


def select(stages: list[Stage], upto: str | None) -> list[Stage]:
    """The stages needed to finish step `upto` (a STEP_ORDER name), or all of them."""
    if upto is None:
        return stages
    by_name = {s.name: s for s in stages}
    wanted = [s.name for s in stages if s.kind == upto]
    needed, todo = set(), list(wanted)
    while todo:
        name = todo.pop()
        if name not in needed:
            needed.add(name)
            todo += by_name[name].deps
    return [s for s in stages if s.name in needed]


def init_ray(recipe: Recipe) -> None:
    import ray

    if ray.is_initialized():
        return
    env = {k: v for k, v in os.environ.items() if k.startswith(("WORKBENCH_", "HF_", "VLLM_"))}
    kwargs = dict(include_dashboard=False, ignore_reinit_error=True, log_to_driver=True,
                  runtime_env={"env_vars": env} if env else None)
    if recipe.ray.address:
        ray.init(address=recipe.ray.address, **kwargs)
    else:
        quiet_local_ray()  # no token-auth notice on the console; Ray's default is unchanged
        ray.init(num_cpus=recipe.ray.num_cpus or os.cpu_count(), num_gpus=recipe.ray.num_gpus, **kwargs)


class Pipeline:
    def __init__(self, recipe: Recipe, out_dir: Path | None = None):
        self.recipe = recipe
        self.rundir = RunDir(Path(out_dir) if out_dir else recipe.run_dir)
        self.stages = plan(recipe)
        self.force = False  # run past the memory plan's refusals (workbench run --force)

    def status(self, upto: str | None = None) -> list[tuple[Stage, bool]]:
        """(stage, cached) in run order. A stage is cached when its manifest matches, its outputs check
        out against their recorded checksums, and every stage it depends on is cached; `self.reasons`
        says why each other stage must run (the first bad file, or the dependency that runs again)."""
        stages, done, self.reasons = select(self.stages, upto), {}, {}
        for s in stages:
            why = self.rundir.why_not_done(s.name, s.input_hash)
            if why is None and (dep := next((d for d in s.deps if not done.get(d, True)), None)):
                why = f"{PROPAGATED}{dep}, which runs again"
            done[s.name] = why is None
            if why:
                self.reasons[s.name] = why
        return [(s, done[s.name]) for s in stages]

    def run(self, upto: str | None = None) -> dict[str, dict]:
        """Run every stage needed for `upto` that is not cached; return {stage: manifest}.

        Holds the run directory's lock throughout: a second run on the same directory is refused."""
        with RunLock(self.rundir.root, command=f"{self.recipe.run.name}: {upto or 'run'}"):
            return self._run_locked(upto)

    def _run_locked(self, upto: str | None) -> dict[str, dict]:
        todo = [s for s, done in self.status(upto) if not done]
        for s in todo:
            stage_function(s.kind)  # refuse early, before any work, if a stage is not implemented
        self.print_reruns(todo)
        if any(s.kind == "verify" for s in todo):  # e.g. the code verifier without a sandbox: before sampling
            from data_gen.verifiers import make_verifier

            make_verifier(self.recipe.verify.verifier, self.recipe.verify.options).check_ready()
        self.rundir.clean_partial(keep={s.name: s.input_hash for s in self.stages})
        manifests = {}
        base_model = None
        if todo:
            console.print(f"[bold]model[/] {self.recipe.model}")
            base_model = resolve_model(self.recipe.model)  # builds/converts built-in models once (cached)
            init_ray(self.recipe)
            if self.recipe.ray.address:  # a cluster: every node must see the run directory (launch.py)
                from workbench.trainers.launch import probe_storage

                probe_storage(self.rundir.root)
            from workbench.memory_plan import check_recipe

            for line in check_recipe(self.recipe, base_model, todo, force=self.force):  # refuses what cannot fit
                console.print(line, highlight=False, soft_wrap=True)
        batches = {kind: [s for s in todo if s.kind == kind] for kind in ("trial", "train")}
        for stage in todo:
            if stage.kind in batches:  # all trials, later all train entries, side by side in Ray
                if batches[stage.kind]:
                    manifests.update(stage_function(stage.kind)(self, batches[stage.kind], base_model))
                    batches[stage.kind] = []
                continue
            manifests[stage.name] = self.run_one(stage, base_model)
        return manifests

    def print_reruns(self, todo: list[Stage]) -> None:
        """Say why finished stages run again: each damaged one with its file, then its dependants in one line."""
        after = [s.name for s in todo if self.reasons[s.name].startswith(PROPAGATED)]
        damaged = [s.name for s in todo if self.reasons[s.name] not in (NOT_RUN, CHANGED) and s.name not in after]
        for name in damaged:
            console.print(f"[yellow]![/] {name} runs again: {self.reasons[name]}", highlight=False, soft_wrap=True)
        if after:
            console.print(f"[yellow]![/] and what was built from it: {', '.join(after)}", highlight=False,
                          soft_wrap=True)

    def context(self, stage: Stage, out: Path, base_model) -> StageContext:
        inputs = {d: self.rundir.path(d) for d in stage.deps}
        return StageContext(self.recipe, out, inputs, base_model, dict(stage.extra))

    def run_one(self, stage: Stage, base_model) -> dict:
        fn = stage_function(stage.kind)
        extra = {}
        if stage.kind == "eval":
            name = stage.extra["model_name"]
            train = stage.extra.get("train_stage", f"train/{name}")
            extra["model_path"] = str(base_model) if name == "base" else str(self.rundir.path(train) / "model")
        tmp = self.rundir.begin(stage.name, stage.input_hash)  # resumable: kept if killed
        ctx = self.context(stage, tmp, base_model)
        ctx.extra.update(extra)
        console.rule(f"[bold]{stage.name}")
        t0 = time.time()
        try:
            counts = fn(ctx) or {}
        except BaseException:
            self.rundir.abort(tmp)
            raise
        return self.finish(stage, tmp, counts, time.time() - t0)

    def finish(self, stage: Stage, tmp: Path, counts: dict, wall: float) -> dict:
        manifest = self.rundir.commit(
            stage.name, tmp, input_hash=stage.input_hash, config=stage.config, seed=stage.extra.get("seed", self.recipe.run.seed),
            counts=counts, wall_time_s=wall,
            inputs={d: (read_manifest(self.rundir.path(d)) or {}).get("input_hash") for d in stage.deps})
        console.print(f"[green]✓[/] {stage.name}: {summary(counts)} ({wall:.1f}s)")
        return manifest


def summary(counts: dict) -> str:
    """A stage's counts for its one-line summary: numbers (floats to 4 digits) and short labels; the rest,
    and fingerprints, are in its manifest."""
    shown = {k: v for k, v in counts.items() if not k.endswith("fingerprint") and (
        isinstance(v, (int, float)) or (isinstance(v, str) and len(v) <= 16))}
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in shown.items())


def is_local_folder(spec: str) -> bool:
    return Path(spec).is_dir()
