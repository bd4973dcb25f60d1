"""The single controller: plans the stages of a recipe, skips the cached ones and runs the rest on Ray.

    prompts -> generate -> verify -> build -> train/<entry> ... -> eval/base, eval/<entry> ... -> report

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

from rich.console import Console

from workbench.models import model_fingerprint, resolve_model
from workbench.recipe import Recipe
from workbench.rundir import RunDir, read_manifest, stable_hash
from workbench.stage import StageContext

console = Console()

# Where each stage's function lives: "module:function". Imported only when the stage runs.
STAGE_FUNCTIONS = {
    "prompts": "data_gen.stages:prompts_stage",
    "generate": "data_gen.stages:generate_stage",
    "verify": "data_gen.stages:verify_stage",
    "build": "data_gen.stages:build_stage",
    "train": "workbench.train_stage:run_train_stages",  # all entries at once, in parallel
    "eval": "evaluators.stages:evaluate_stage",
    "report": "evaluators.stages:report_stage",
}
STEP_ORDER = ["prompts", "generate", "verify", "build", "train", "eval", "report"]


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
    """What a base model contributes to hashes: a local folder's content fingerprint, else its name."""
    return model_fingerprint(spec) if is_local_folder(spec) else spec


def needs_samples(recipe: Recipe) -> bool:
    """Sample from the base model unless every train entry consumes demonstrations or prompts only."""
    from workbench.registry import get_trainer
    from workbench.train_stage import data_kind

    if not recipe.train:
        return True  # no trainer: the run is about the data set (and the base model's pass@k)
    kinds = {data_kind(get_trainer(e.algorithm), e.config) for e in recipe.train}
    return bool(kinds & {"positives", "pairs"})


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
    for i, entry in enumerate(recipe.train):
        stages.append(Stage(f"train/{entry.name}", "train", ["build"],
                            {"model": model, "template": dump["template"], "entry": dump["train"][i],
                             "seed": seed}, extra={"entry_index": i}))
    eval_cfg = {"template": dump["template"], "evaluate": dump["evaluate"], "verify": dump["verify"],
                "seed": seed}
    stages.append(Stage("eval/base", "eval", [], {**eval_cfg, "model": model}, extra={"model_name": "base"}))
    for entry in recipe.train:
        stages.append(Stage(f"eval/{entry.name}", "eval", [f"train/{entry.name}"], eval_cfg,
                            extra={"model_name": entry.name}))
    report_deps = ["generate"] if needs_samples(recipe) else []
    report_deps += [f"train/{e.name}" for e in recipe.train]
    report_deps += ["eval/base"] + [f"eval/{e.name}" for e in recipe.train]
    stages.append(Stage("report", "report", report_deps, {"report": dump["report"],
                                                          "rows": [e.name for e in recipe.train]}))
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
        ray.init(num_cpus=recipe.ray.num_cpus or os.cpu_count(), num_gpus=recipe.ray.num_gpus, **kwargs)


class Pipeline:
    def __init__(self, recipe: Recipe, out_dir: Path | None = None):
        self.recipe = recipe
        self.rundir = RunDir(Path(out_dir) if out_dir else recipe.run_dir)
        self.stages = plan(recipe)

    def status(self, upto: str | None = None) -> list[tuple[Stage, bool]]:
        return [(s, self.rundir.is_done(s.name, s.input_hash)) for s in select(self.stages, upto)]

    def run(self, upto: str | None = None) -> dict[str, dict]:
        """Run every stage needed for `upto` that is not cached; return {stage: manifest}."""
        todo = [s for s, done in self.status(upto) if not done]
        for s in todo:
            stage_function(s.kind)  # refuse early, before any work, if a stage is not implemented
        self.rundir.root.mkdir(parents=True, exist_ok=True)
        self.rundir.clean_partial()
        manifests = {}
        base_model = None
        if todo:
            console.print(f"[bold]model[/] {self.recipe.model}")
            base_model = resolve_model(self.recipe.model)  # builds/converts built-in models once (cached)
            init_ray(self.recipe)
        pending_train = [s for s in todo if s.kind == "train"]
        for stage in todo:
            if stage.kind == "train":
                if pending_train:
                    manifests.update(stage_function("train")(self, pending_train, base_model))
                    pending_train = []
                continue
            manifests[stage.name] = self.run_one(stage, base_model)
        return manifests

    def context(self, stage: Stage, out: Path, base_model) -> StageContext:
        inputs = {d: self.rundir.path(d) for d in stage.deps}
        return StageContext(self.recipe, out, inputs, base_model, dict(stage.extra))

    def run_one(self, stage: Stage, base_model) -> dict:
        fn = stage_function(stage.kind)
        extra = {}
        if stage.kind == "eval":
            name = stage.extra["model_name"]
            extra["model_path"] = str(base_model) if name == "base" else \
                str(self.rundir.path(f"train/{name}") / "model")
        tmp = self.rundir.begin(stage.name)
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
            stage.name, tmp, input_hash=stage.input_hash, config=stage.config, seed=self.recipe.run.seed,
            counts=counts, wall_time_s=wall,
            inputs={d: (read_manifest(self.rundir.path(d)) or {}).get("input_hash") for d in stage.deps})
        shown = ", ".join(f"{k}={v}" for k, v in counts.items()  # numbers and short labels; the rest
                          if isinstance(v, (int, float)) or (isinstance(v, str) and len(v) <= 16))  # is in the manifest
        console.print(f"[green]✓[/] {stage.name}: {shown} ({wall:.1f}s)")
        return manifest


def is_local_folder(spec: str) -> bool:
    return Path(spec).is_dir()
