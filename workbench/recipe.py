"""The recipe: one YAML file describing a whole Table 2 experiment, validated by pydantic.

    recipe = load_recipe("recipes/quickstart.yaml", overrides=["generate.temperature=0.7"])

A bad recipe fails before any work starts with one line naming the file, the key path and what was
expected, e.g. `recipes/x.yaml: train[2].learning_rate: expected a number, got 'fast'`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import ConfigDict, Field, PrivateAttr, ValidationError, field_validator

from data_gen.config import BuildConfig, GenerateConfig, PromptsConfig, VerifyConfig
from evaluators.config import EvaluateConfig, ReportConfig
from workbench.budget import BudgetConfig
from workbench.config_base import Section
from workbench.sweep import TuneConfig
from workbench.template import TemplateConfig


class RecipeError(ValueError):
    """A recipe problem, already formatted as one line."""


class RunConfig(Section):
    name: str = Field(description="Run name; outputs go to <out_dir>/<name>/.")
    seed: int = Field(0, description="Seed for shuffling, sampling and training.")
    out_dir: str = Field("runs", description="Parent folder of run directories.")
    seeds: list[int] | None = Field(
        None, min_length=1, description="Training and evaluation seeds: the offline data is generated once "
        "(with `seed`), then every train entry and every evaluation runs once per seed; unset means [seed].")
    report_to: list[Literal["tensorboard", "wandb"]] = Field(
        default_factory=list, description="Trackers every trainer reports to besides metrics.jsonl: tensorboard "
        "(event files in each train/<entry>/tensorboard/), wandb (needs `pip install wandb`). Logging only: "
        "changing it reruns nothing.")

    @field_validator("report_to")
    @classmethod
    def _trackers_installed(cls, value: list[str]) -> list[str]:
        from workbench.trainers.trackers import check_trackers

        check_trackers(value, prefix="")
        return value

    @property
    def seed_list(self) -> list[int]:
        """The seeds every train entry and evaluation runs with (`seeds`, else `[seed]`), duplicates dropped."""
        return list(dict.fromkeys(self.seeds)) if self.seeds else [self.seed]


class RayConfig(Section):
    address: str | None = Field(None, description="Ray cluster to join (e.g. 'auto' or 'ray://host:10001'); "
                                "unset starts a local Ray.")
    num_cpus: int | None = Field(None, ge=1, description="CPUs of a local Ray (default: the machine's cores).")
    num_gpus: int | None = Field(None, ge=0, description="GPUs of a local Ray (default: detected).")
    gpu_memory_gb: float | None = Field(None, gt=0, description="Memory of one GPU (GiB) for the memory plan "
                                        "(workbench/memory_plan.py), e.g. 80 to plan a GPU run on another machine; "
                                        "unset: read from this machine's or the joined cluster's GPUs.")
    max_failures: int = Field(2, ge=-1, description="Times Ray Train restarts a train entry's worker group "
                              "(num_workers > 1) after a lost or failed worker, resuming from the entry's latest "
                              "checkpoint (save_steps) within the same run; 0 never, -1 always.")
    placement: Literal["PACK", "SPREAD"] = Field("PACK", description="How a worker group's processes are placed: "
                                                 "PACK fills one node first (GPUs of one node talk fastest), "
                                                 "SPREAD puts them on different nodes where it can.")


# Train-entry fields that say where and how an entry runs, not what it trains: left out of the stage hash, so
# changing them reruns nothing, and a killed run may resume on another number of workers (the global batch
# and the batches are the same; checkpoints reshard).
LAUNCH_FIELDS = frozenset({"num_cpus", "num_gpus", "memory_gb", "num_workers", "cpus_per_worker", "gpus_per_worker",
                           "save_steps"})


class TrainEntry(Section):
    """One algorithm to train. Keys besides the fields below are the algorithm's own config fields."""

    model_config = ConfigDict(extra="allow")
    name: str = Field(description="Row name in the report, and folder under train/.")
    algorithm: str = Field(description="A registered trainer (see `workbench algorithms`).")
    num_cpus: float = Field(1, ge=0, description="CPUs this training task reserves in Ray.")
    num_gpus: float = Field(0, ge=0, description="GPUs this training task reserves in Ray.")
    memory_gb: float | None = Field(None, gt=0, description="Memory (GiB) each training process reserves in Ray "
                                    "(its `memory` resource), so Ray never co-schedules entries that cannot fit "
                                    "together; unset: estimated from the model, algorithm and batch "
                                    "(workbench/resources.py).")
    num_workers: int = Field(1, ge=1, description="Training processes (Ray Train workers, one per GPU): 1 is one "
                             "Ray task; N > 1 shards the SFT-family loop with FSDP2 and runs TRL trainers with DDP "
                             "(workbench/trainers/launch.py). The global batch stays batch_size whatever N is.")
    cpus_per_worker: float | None = Field(None, ge=0, description="CPUs each worker reserves (default: num_cpus).")
    gpus_per_worker: float | None = Field(None, ge=0, description="GPUs each worker reserves, at most 1 "
                                          "(default: num_gpus).")
    save_steps: int = Field(0, ge=0, description="Write a resumable checkpoint every N optimizer steps into the "
                            "stage's in-progress folder; a killed run resumes from the latest (0: none).")
    keep_checkpoints: bool = Field(False, description="Keep each checkpoint's model/ folder "
                                   "(checkpoints/step-<N>/model) in the finished stage, e.g. for learning curves.")
    sweep: dict[str, list] | None = Field(
        None, description="A grid over this entry's own config fields, e.g. {learning_rate: [1e-4, 1e-3]}: "
        "every combination trains once, the best on the validation split is kept (workbench/sweep.py).")
    _config = PrivateAttr(default=None)

    @property
    def config(self):
        """The validated algorithm config (an instance of the trainer's `Config`)."""
        return self._config


class Recipe(Section):
    run: RunConfig
    model: str = Field(description="Base model: toy:<name>, smollm2-135m, a Hugging Face id or a local folder.")
    prompts: PromptsConfig = Field(default_factory=PromptsConfig)
    template: TemplateConfig = Field(default_factory=TemplateConfig)
    generate: GenerateConfig = Field(default_factory=GenerateConfig)
    verify: VerifyConfig = Field(default_factory=VerifyConfig)
    build: BuildConfig = Field(default_factory=BuildConfig)
    train: list[TrainEntry] = Field(default_factory=list)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    report: ReportConfig = Field(default_factory=ReportConfig)
    tune: TuneConfig = Field(default_factory=TuneConfig)
    budget: BudgetConfig = Field(default_factory=BudgetConfig)
    ray: RayConfig = Field(default_factory=RayConfig)

    @property
    def run_dir(self) -> Path:
        return Path(self.run.out_dir) / self.run.name


_EXPECTED = {
    "float_parsing": "expected a number", "float_type": "expected a number",
    "int_parsing": "expected an integer", "int_type": "expected an integer",
    "int_from_float": "expected an integer", "bool_parsing": "expected true or false",
    "bool_type": "expected true or false", "string_type": "expected a string",
    "missing": "missing required key", "extra_forbidden": "unknown key",
    "dict_type": "expected a mapping", "model_type": "expected a mapping", "list_type": "expected a list",
}


def _key_path(loc: tuple, prefix: str = "") -> str:
    out = prefix
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif str(part) in ("str", "BenchmarkRef") or "[" in str(part):
            continue  # pydantic's union-member labels are not keys
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def _format_error(source: str, exc: ValidationError, prefix: str = "") -> RecipeError:
    err = exc.errors()[0]
    what = _EXPECTED.get(err["type"], err["msg"])
    if err["type"] not in ("missing", "extra_forbidden"):
        what += f", got {err.get('input')!r}"
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return RecipeError(f"{source}: {_key_path(err['loc'], prefix)}: {what}{more}")


def _apply_override(data: dict, item: str, source: str) -> None:
    """Apply `a.b[2].c=value` (value parsed as YAML) to the raw recipe dict."""
    if "=" not in item:
        raise RecipeError(f"{source}: --set {item!r}: expected key.path=value")
    key, raw = item.split("=", 1)
    value = yaml.safe_load(raw) if raw != "" else ""
    parts: list = []
    for piece in key.strip().split("."):
        name, *idx = piece.replace("]", "").split("[")
        if name:
            parts.append(name)
        parts += [int(i) for i in idx]
    node = data
    for here, nxt in zip(parts[:-1], parts[1:]):
        try:
            if isinstance(node, list):
                node = node[here]
            else:
                node = node.setdefault(here, [] if isinstance(nxt, int) else {})
        except (IndexError, TypeError, AttributeError):
            raise RecipeError(f"{source}: --set {key}: no such key") from None
    try:
        node[parts[-1]] = value
    except (IndexError, TypeError):
        raise RecipeError(f"{source}: --set {key}: no such key") from None


def parse_recipe(data: dict, source: str = "<recipe>", overrides: list[str] = ()) -> Recipe:
    """Validate a raw recipe dict (plus `--set` overrides); raise RecipeError with one line on failure."""
    from workbench.registry import PluginError, get_trainer

    if not isinstance(data, dict):
        raise RecipeError(f"{source}: (top level): expected a mapping")
    for item in overrides:
        _apply_override(data, item, source)
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as exc:
        raise _format_error(source, exc) from None
    seen = set()
    for i, entry in enumerate(recipe.train):
        if entry.name in seen or entry.name == "base":
            raise RecipeError(f"{source}: train[{i}].name: {entry.name!r} is used twice or reserved")
        seen.add(entry.name)
        try:
            plugin = get_trainer(entry.algorithm)
        except PluginError as exc:
            raise RecipeError(f"{source}: train[{i}].algorithm: {exc}") from None
        try:
            entry._config = plugin.Config.model_validate(entry.model_extra or {})
        except ValidationError as exc:
            raise _format_error(source, exc, prefix=f"train[{i}]") from None
        from workbench.trainers.launch import check_entry

        if problem := check_entry(entry, plugin):
            raise RecipeError(f"{source}: train[{i}].{problem[0]}: {problem[1]}")
        if entry.sweep is not None:
            from workbench.sweep import check_sweep

            check_sweep(entry, plugin, f"{source}: train[{i}].sweep")
    from workbench.budget import apply_matching

    apply_matching(recipe, source)  # budget.match: online entries' max_steps from the offline generation
    return recipe


def load_recipe(path: str | Path, overrides: list[str] = ()) -> Recipe:
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"{path}: recipe file not found")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else "(top level)"
        raise RecipeError(f"{path}: {where}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
    return parse_recipe(data or {}, str(path), overrides)
