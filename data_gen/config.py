"""Recipe sections owned by data generation: `prompts`, `generate`, `verify`, `build`.

Also `SamplerConfig`, the sampling settings shared by the generate stage and the evaluator.
"""

from typing import Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from workbench.config_base import Section


class ToyTaskConfig(Section):
    """Difficulty knobs of the synthetic arithmetic task (see data_gen/toy.py)."""

    min_ops: int = Field(2, ge=1, description="Fewest operations in a problem's chain.")
    max_ops: int = Field(3, ge=1, description="Most operations in a problem's chain.")
    min_digits: int = Field(1, ge=1, description="Fewest digits of an operand.")
    max_digits: int = Field(2, ge=1, description="Most digits of an operand.")
    operators: str = Field("+-", description="Operators drawn from, any of '+-*'.")


class PromptsConfig(Section):
    source: Literal["toy", "toy-code", "smol", "hf", "file"] = Field(
        "toy", description="Where prompts come from: the toy task, the toy code task (data_gen/code_tasks.py; "
        "grade it with verify.verifier: code), the SmolLM2-sized arithmetic task (data_gen/smol_tasks.py), "
        "a Hugging Face dataset id, or a local file."
    )
    hf_id: str | None = Field(None, description="Hugging Face dataset id (source=hf), e.g. AI-MO/NuminaMath-CoT.")
    hf_subset: str | None = Field(None, description="Dataset configuration name, if it has several.")
    split: str = Field("train", description="Dataset split (source=hf).")
    path: str | None = Field(None, description="Local .jsonl or .parquet file (source=file).")
    problem_field: str = Field("problem", description="Column holding the problem text.")
    answer_field: str | None = Field(
        None, description="Column holding the gold answer; when unset, the last \\boxed{} of solution_field."
    )
    solution_field: str | None = Field(
        "solution", description="Column holding a worked solution (gold answer source and demonstrations)."
    )
    max_prompts: int | None = Field(None, ge=1, description="Keep at most this many prompts after shuffling.")
    shuffle: bool = Field(True, description="Shuffle with the run seed before taking max_prompts.")
    first_rows: bool = Field(
        False, description="Take the source's first max_prompts rows in their order, unfiltered: rows without a "
        "gold answer are kept (answer null) and so are repeated problems (prompt_id gets -2, -3, ...); only rows "
        "without a problem are skipped. What the paper's Table 1 trained on (yongliang-wu/DFT "
        "numina_cot.py --train_end 100000: dataset.select(range(100000))). Excludes shuffle."
    )
    toy: ToyTaskConfig = Field(default_factory=ToyTaskConfig, description="Toy task knobs (source=toy).")

    @model_validator(mode="after")
    def _first_rows_unshuffled(self):
        if self.first_rows and self.shuffle and "shuffle" in self.model_fields_set:
            raise ValueError("first_rows takes rows in source order: set shuffle: false (or leave it out)")
        return self


class SamplerConfig(Section):
    """Sampling settings shared by data generation and evaluation."""

    engine: Literal["auto", "vllm", "hf"] = Field(
        "auto", description="vllm, hf (transformers generate), or auto: vllm whenever it imports."
    )
    temperature: float = Field(1.0, ge=0.0, description="Sampling temperature (the paper: 1.0).")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="Nucleus sampling threshold.")
    max_tokens: int = Field(1024, ge=1, description="Most new tokens per response.")
    num_actors: int = Field(1, ge=1, description="Engine actors; prompts are sharded across them (data parallel).")
    tensor_parallel_size: int = Field(1, ge=1, description="GPUs per vLLM engine (tensor parallel).")
    num_gpus_per_actor: float = Field(0, ge=0, description="GPUs each engine actor reserves in Ray.")
    num_cpus_per_actor: float = Field(1, ge=0, description="CPUs each engine actor reserves in Ray.")
    kv_cache_gb: float = Field(1.0, gt=0, description="KV cache size for vLLM on CPU (GiB).")
    gpu_memory_utilization: float = Field(0.85, gt=0, le=1, description="vLLM's GPU memory share on GPUs.")
    memory_gb: float | None = Field(
        None, gt=0, description="Host memory (GiB) each engine actor reserves in Ray (its `memory` resource), so "
        "Ray never starts it beside work that would not fit; unset: estimated from the model size, the KV cache "
        "(kv_cache_gb, or hf_batch_size x max_tokens) and the engine (workbench/resources.py).")
    dtype: str = Field("bfloat16", description="Engine dtype.")
    hf_batch_size: int = Field(64, ge=1, description="Prompts per transformers generate call (engine=hf).")
    vllm_in_process: bool = Field(
        False, description="Run vLLM's engine core inside the actor process (VLLM_ENABLE_V1_MULTIPROCESSING=0): "
        "starts in seconds and can be reseeded, but generated ~5x slower on CPU here. For tests and tiny jobs."
    )


class GenerateConfig(SamplerConfig):
    n: int = Field(4, ge=1, description="Responses sampled per prompt (the paper: 4).")


class VerifyConfig(Section):
    verifier: str = Field("math", description="A registered verifier (`workbench verifiers`): math (math-verify, "
                          "the default), exact (normalised string match), code (runs tests in a sandbox).")
    options: dict = Field(default_factory=dict, description="The verifier's own options, checked against its "
                          "Config (e.g. code: sandbox, cpu_s, memory_mb, max_processes, file_mb).")
    timeout_s: float = Field(5.0, gt=0, description="Per-sample deadline (math: parse and compare; code: the "
                             "program's wall-clock limit).")
    chunk_size: int = Field(512, ge=1, description="Samples per Ray verification task.")
    max_error_rate: float = Field(
        0.05, ge=0, le=1, description="Fail the stage when a chunk has more than this share of status=error."
    )
    num_cpus_per_task: float = Field(1, gt=0, description="CPUs each verification task reserves.")

    @field_validator("verifier")
    @classmethod
    def _known_verifier(cls, name: str) -> str:
        """An unknown verifier fails the recipe before any work, naming the registered ones."""
        from workbench.registry import PluginError, get_plugin

        try:
            get_plugin("workbench.verifiers", name)
        except PluginError as exc:
            raise ValueError(str(exc)) from None
        return name

    @field_validator("options")
    @classmethod
    def _valid_options(cls, options: dict, info: ValidationInfo) -> dict:
        """Options are checked against the verifier's own Config, naming the bad key."""
        from pydantic import ValidationError

        from workbench.registry import get_plugin

        if "verifier" not in info.data:
            return options  # the verifier itself was rejected
        try:
            get_plugin("workbench.verifiers", info.data["verifier"]).Config.model_validate(options)
        except ValidationError as exc:
            err = exc.errors()[0]
            raise ValueError(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']} "
                             f"(verifier {info.data['verifier']})") from None
        return options


class BuildConfig(Section):
    dedup_positives: bool = Field(True, description="Drop identical correct responses to the same prompt.")
    keep_truncated: bool = Field(
        False, description="Let a correct response cut at max_tokens (finish_reason length) be a positive and a "
        "DPO chosen. Off by default: its last \\boxed{} may be a mid-thought guess and SFT would teach it to stop "
        "there; such responses are kept as DPO rejected and counted in stats.json (truncated_correct)."
    )
    pair_strategy: Literal["random", "first"] = Field(
        "random", description="How a (correct, incorrect) pair is chosen per prompt: random or in sample order."
    )
    max_pairs_per_prompt: int = Field(1, ge=1, description="Most DPO pairs built from one prompt.")
    target_pairs: int | None = Field(
        None, ge=1, description="Stop at this many pairs in total (the paper: 100000); unset keeps all."
    )
