"""`workbench export RUN_DIR --to DIR`: a run's verified data sets in the formats people train with.

Writes, from the run's build stage (see DESIGN.md for its columns), parquet files that
`datasets.load_dataset(DIR, CONFIG)` reads and TRL trainers take unchanged:

| config | from | columns (TRL's dataset formats) |
| --- | --- | --- |
| `sft` | positives | `prompt`, `completion` (prompt-completion, the exact prompt string the model was sampled with) |
| `preference` | pairs | `prompt`, `chosen`, `rejected` (DPO's preference format) |
| `rl` | rl prompts | `prompt`, `answer` (GRPO/PPO prompts; the verifier grades against `answer`) |
| `demonstrations` | gold solutions, when the prompts have them | `prompt`, `completion` |
| `*_conversational` | the same rows, when the run's template used a chat template | `messages` (sft, demonstrations), or `prompt` / `chosen` / `rejected` as message lists |

Every file keeps `prompt_id`. `README.md` is a dataset card: a YAML header declaring the configs, then
the base model and its fingerprint, the sampling settings, the verifier and its version, counts,
the base model's pass@1 / pass@n, and the commands that made and exported the data.
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import polars as pl

from data_gen.io import DataFileError
from workbench.template import TemplateConfig

SOURCES = {"sft": "positives", "preference": "pairs", "rl": "rl_prompts", "demonstrations": "demonstrations"}


class ExportError(DataFileError):
    """A run directory that cannot be exported, as one line naming the file or key."""


def provenance(model: str) -> dict:
    """What the generate stage records for dataset cards: the resolved base model, its fingerprint, the command."""
    from workbench.models import model_fingerprint

    return {"base_model": str(model), "base_model_fingerprint": model_fingerprint(str(model)),
            "command": shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]])}


def _manifest(run_dir: Path, stage: str, required: bool = True) -> dict:
    path = run_dir / stage / "manifest.json"
    if not path.is_file():
        if required:
            raise ExportError(f"{path}: not found (run the {stage} stage first: workbench build RECIPE)")
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ExportError(f"{path}: not valid JSON ({exc.msg})") from None


def _messages(problem: str, template: TemplateConfig) -> list[dict]:
    user = template.user_format.format(problem=problem, instruction=template.instruction)
    return ([{"role": "system", "content": template.system}] if template.system else []) + \
        [{"role": "user", "content": user}]


def _tokenizer(run_dir: Path, gen: dict, model: str | None):
    from transformers import AutoTokenizer

    from workbench.models import resolve_model

    spec = model or gen.get("counts", {}).get("base_model") or gen.get("config", {}).get("model")
    if not spec:
        raise ExportError(f"{run_dir}/generate/manifest.json: no base model recorded; pass --model")
    try:
        path = spec if Path(str(spec)).is_dir() else resolve_model(str(spec))
        return AutoTokenizer.from_pretrained(path), str(spec)
    except (OSError, ValueError) as exc:
        raise ExportError(f"base model {spec!r}: cannot load its tokenizer ({exc}); pass --model") from None


def _assistant(texts: list[str]) -> list[list[dict]]:
    return [[{"role": "assistant", "content": t}] for t in texts]


def _formats(name: str, df: pl.DataFrame, prompts: list[str], convo: list[list[dict]] | None) -> dict:
    """{config: frame}: the standard-format frame of one data set, and its conversational twin when `convo`."""
    col = lambda c: df[c].cast(pl.String).to_list()
    if name in ("sft", "demonstrations"):
        std = {"prompt": prompts, "completion": col("response")}
        conv = {"messages": [c + a for c, a in zip(convo or [], _assistant(col("response")))]}
    elif name == "preference":
        std = {"prompt": prompts, "chosen": col("chosen"), "rejected": col("rejected")}
        conv = {"prompt": convo, "chosen": _assistant(col("chosen")), "rejected": _assistant(col("rejected"))}
    else:
        std = {"prompt": prompts, "answer": col("answer")}
        conv = {"prompt": convo, "answer": col("answer")}
    out = {name: pl.DataFrame({"prompt_id": col("prompt_id"), **std})}
    if convo is not None:
        out[f"{name}_conversational"] = pl.DataFrame({"prompt_id": col("prompt_id"), **conv})
    return out


def export_run(run_dir: str | Path, to: str | Path, model: str | None = None, command: str | None = None) -> dict:
    """Export `run_dir`'s build stage to `to` (see the module docstring); returns {config: rows}."""
    from workbench.template import render_prompt

    run_dir, to = Path(run_dir), Path(to)
    if not run_dir.is_dir():
        raise ExportError(f"{run_dir}: no such run directory")
    _manifest(run_dir, "build")
    gen, ver = _manifest(run_dir, "generate", required=False), _manifest(run_dir, "verify", required=False)
    template = TemplateConfig.model_validate(gen.get("config", {}).get("template") or {})
    tokenizer, model_name = _tokenizer(run_dir, gen, model)
    chat = bool(template.use_chat_template and getattr(tokenizer, "chat_template", None))
    written: dict[str, int] = {}
    to.mkdir(parents=True, exist_ok=True)
    for name, source in SOURCES.items():
        path = run_dir / "build" / f"{source}.parquet"
        if not path.is_file():
            continue
        df = pl.read_parquet(path)
        if df.height == 0:
            continue  # an empty config would not load; the card says it is empty
        problems = df["problem"].to_list()
        prompts = [render_prompt(tokenizer, p, template) for p in problems]
        convo = [_messages(p, template) for p in problems] if chat else None
        for config, frame in _formats(name, df, prompts, convo).items():
            (to / config).mkdir(exist_ok=True)
            frame.write_parquet(to / config / "train.parquet")
            written[config] = frame.height
    if not written:
        raise ExportError(f"{run_dir}/build: no rows to export (positives, pairs and rl prompts are all empty)")
    stats_path = run_dir / "build" / "stats.json"
    stats = json.loads(stats_path.read_text()) if stats_path.is_file() else {}
    (to / "README.md").write_text(dataset_card(run_dir, gen, ver, stats, written, model_name, chat, command))
    return written


def _pct(value) -> str:
    return f"{100 * value:.2f}%" if isinstance(value, (int, float)) else "n/a"


def dataset_card(run_dir: Path, gen: dict, ver: dict, stats: dict, written: dict[str, int], model: str,
                 chat: bool, command: str | None) -> str:
    """README.md of an export: YAML configs for `datasets`, then where the data came from and how good it is."""
    header = ["---", "configs:"]
    for config in written:
        header += [f"- config_name: {config}", "  data_files:", "  - split: train", f"    path: {config}/train.parquet"]
    header += ["tags:", "- trl", "- offline-rl-workbench", "---", ""]
    counts, gcfg = gen.get("counts", {}), gen.get("config", {})
    sampling = gcfg.get("generate", {})
    vcfg = ver.get("config", {}).get("verify", {})
    n = stats.get("samples_per_prompt")
    made = counts.get("command") or "not recorded (run directory older than provenance records)"
    version = ver.get("counts", {}).get("verifier_version", "version not recorded")
    sampling_line = (f"n={sampling.get('n')}, temperature={sampling.get('temperature')}, top_p={sampling.get('top_p')}, "
                     f"max_tokens={sampling.get('max_tokens')}, engine={counts.get('engine', sampling.get('engine'))}, "
                     f"seed={gcfg.get('seed')}")
    quality = (f"pass@1: {_pct(stats.get('pass@1'))}, pass@{n}: {_pct(stats.get(f'pass@{n}'))}, "
               f"share correct: {_pct(stats.get('share_correct'))}")
    lines = [
        f"# Verified data set from `{run_dir.name}`", "",
        "Made by the offline-RL workbench (arXiv 2508.05629, Table 2 setting): the base model's own samples, graded",
        "by a verifier; positives for SFT-style training (RFT, DFT), preference pairs for DPO, prompts with answers",
        "for online RL.", "",
        "## Source", "",
        f"- base model: `{model}` (fingerprint `{counts.get('base_model_fingerprint', 'not recorded')}`)",
        f"- sampling: {sampling_line}",
        f"- prompt template: {'the tokenizer chat template' if chat else 'plain text'}; the exact prompts are in `prompt`",
        (f"- verifier: `{vcfg.get('verifier', 'math')}` ({version}), timeout {vcfg.get('timeout_s')} s, "
         f"options {json.dumps(vcfg.get('options') or {})}"),
        f"- made with: `{made}`",
        f"- exported with: `{command or 'workbench export'}`", "",
        "## Counts", "",
        "| config | rows |", "| --- | ---: |", *[f"| {c} | {r} |" for c, r in written.items()], "",
        (f"- prompts: {stats.get('prompts', 'n/a')}, samples: {stats.get('samples', 'n/a')} ({n} per prompt), "
         f"truncated: {stats.get('truncated', 'n/a')}"),
        f"- statuses: {json.dumps(stats.get('status', {}))}",
        f"- base model {quality}",
        f"- prompts without a pair: {json.dumps(stats.get('prompts_without_pairs', {}))}", "",
        "## Use", "",
        "```python",
        "from datasets import load_dataset",
        'sft = load_dataset("PATH", "sft", split="train")          # trl.SFTTrainer',
        'pairs = load_dataset("PATH", "preference", split="train")  # trl.DPOTrainer',
        "```", "",
    ]
    return "\n".join(header + lines)
