"""Recipe sections owned by data generation: `prompts`, `generate`, `verify`, `build`.

Also `SamplerConfig`, the sampling settings shared by the generate stage and the evaluator.
"""

from typing import Literal

from pydantic import Field

from workbench.config_base import Section


class ToyTaskConfig(Section):
    """Difficulty knobs of the synthetic arithmetic task (see data_gen/toy.py)."""

    min_ops: int = Field(2, ge=1, description="Fewest operations in a problem's chain.")
    max_ops: int = Field(3, ge=1, description="Most operations in a problem's chain.")
    min_digits: int = Field(1, ge=1, description="Fewest digits of an operand.")
    max_digits: int = Field(2, ge=1, description="Most digits of an operand.")
    operators: str = Field("+-", description="Operators drawn from, any of '+-*'.")


class PromptsConfig(Section):
    source: Literal["toy", "hf", "file"] = Field(
        "toy", description="Where prompts come from: the toy task, a Hugging Face dataset id, or a local file."
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
    toy: ToyTaskConfig = Field(default_factory=ToyTaskConfig, description="Toy task knobs (source=toy).")


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
    dtype: str = Field("bfloat16", description="Engine dtype.")
    hf_batch_size: int = Field(64, ge=1, description="Prompts per transformers generate call (engine=hf).")
    vllm_in_process: bool = Field(
        False, description="Run vLLM's engine core inside the actor process (VLLM_ENABLE_V1_MULTIPROCESSING=0): "
        "starts in seconds and can be reseeded, but generated ~5x slower on CPU here. For tests and tiny jobs."
    )


class GenerateConfig(SamplerConfig):
    n: int = Field(4, ge=1, description="Responses sampled per prompt (the paper: 4).")


class VerifyConfig(Section):
    timeout_s: float = Field(5.0, gt=0, description="Per-sample math-verify timeout (parse and compare).")
    chunk_size: int = Field(512, ge=1, description="Samples per Ray verification task.")
    max_error_rate: float = Field(
        0.05, ge=0, le=1, description="Fail the stage when a chunk has more than this share of status=error."
    )
    num_cpus_per_task: float = Field(1, gt=0, description="CPUs each verification task reserves.")


class BuildConfig(Section):
    dedup_positives: bool = Field(True, description="Drop identical correct responses to the same prompt.")
    pair_strategy: Literal["random", "first"] = Field(
        "random", description="How a (correct, incorrect) pair is chosen per prompt: random or in sample order."
    )
    max_pairs_per_prompt: int = Field(1, ge=1, description="Most DPO pairs built from one prompt.")
    target_pairs: int | None = Field(
        None, ge=1, description="Stop at this many pairs in total (the paper: 100000); unset keeps all."
    )
