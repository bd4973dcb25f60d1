"""Memory and disk estimates (workbench/resources.py) and memory-aware training launches."""

import json

import pytest
import ray

from workbench import train_stage
from workbench.pipeline import Pipeline
from workbench.recipe import parse_recipe
from workbench.resources import (
    check_disk,
    engine_memory_gb,
    fit_memory,
    memory_kill,
    train_memory_gb,
    with_memory,
)
from workbench.toy_model import save_random_toy_model

SMOLLM2 = {"vocab_size": 49152, "hidden_size": 576, "num_hidden_layers": 30, "intermediate_size": 1536,
           "num_attention_heads": 9, "num_key_value_heads": 3, "head_dim": 64, "dtype": "float32"}
OOM = ("Task was killed due to the node running low on memory.\nMemory on the node (IP: 10.0.0.1, ID: ab) where "
       "the task (task ID: cd, name=_single, pid=42, memory used=12.40GB) was running was 22.59GB / 23.54GB "
       "(0.959), which exceeds the memory usage threshold of 0.95.")


def smollm2_shaped(tmp_path):
    folder = tmp_path / "smollm2"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(SMOLLM2))
    with open(folder / "model.safetensors", "wb") as f:  # sparse: the size of SmolLM2-135M's fp32 weights
        f.truncate(538_090_408)
    return str(folder)


def entries(*specs):
    recipe = parse_recipe({"run": {"name": "t"}, "model": "toy:arith", "train": list(specs)}, "t.yaml")
    return recipe.train


def test_estimate_is_the_memory_plans_process_total_and_covers_ppos_measured_peak(tmp_path):
    """recipes/smollm2-135m.yaml's PPO entry peaked at 5.81 GiB (one iteration, vLLM rollouts, 256-token logit
    chunks; README, benchmarks/ppo.py): the estimate covers it within 30%. DFT without gradient checkpointing
    (full logits, every layer's activations) needs more than with it."""
    from workbench.memory_plan import GIB, model_shape, train_plan

    model = smollm2_shaped(tmp_path)
    common = {"per_device_batch_size": 8, "max_length": 384}
    ppo, dft, dft_ckpt = entries({"name": "ppo", "algorithm": "ppo", "rollout_engine": "vllm", "batch_size": 16,
                                  "rollout_kv_cache_gb": 0.25, "max_completion_length": 192, **common},
                                 {"name": "dft", "algorithm": "dft", **common},
                                 {"name": "c", "algorithm": "dft", "gradient_checkpointing": True, **common})
    assert 5.81 <= train_memory_gb(ppo, model) <= 1.3 * 5.81
    assert train_memory_gb(dft, model) == round(train_plan(dft, 0, model_shape(model, model), False).total / GIB, 2)
    assert train_memory_gb(dft, model) > train_memory_gb(dft_ckpt, model) > 1.5


def test_fsdp_workers_hold_a_share_of_the_model_states_and_ddp_workers_all_of_it(tmp_path):
    model = smollm2_shaped(tmp_path)
    spec = {"per_device_batch_size": 8, "max_length": 384, "max_completion_length": 192, "rollout_engine": "hf"}
    one, four, dpo1, dpo4 = entries({"name": "a", "algorithm": "ppo", **spec},
                                    {"name": "b", "algorithm": "ppo", "num_workers": 4, **spec},
                                    {"name": "c", "algorithm": "dpo", "per_device_batch_size": 8},
                                    {"name": "d", "algorithm": "dpo", "per_device_batch_size": 8, "num_workers": 4})
    P = 538_090_408 // 4
    states = P * (4 * 2 + 4 + 8 * 2) / 2**30  # PPO: actor and critic weights and AdamW, one model's gradients
    gathered = 4 * (2 * (P - 49152 * 576) / 30 + 49152 * 576) / 2**30  # FSDP2: two layers and the embeddings
    assert train_memory_gb(one, model) - train_memory_gb(four, model) == pytest.approx(
        states * 3 / 4 - gathered, abs=0.02)
    assert train_memory_gb(dpo1, model) == train_memory_gb(dpo4, model)


def test_explicit_memory_is_kept_checked_and_the_estimate_capped(tmp_path):
    model = smollm2_shaped(tmp_path)
    own, est = entries({"name": "a", "algorithm": "dft", "memory_gb": 3},
                       {"name": "b", "algorithm": "ppo", "per_device_batch_size": 8, "max_length": 384,
                        "max_completion_length": 192})
    assert with_memory(own, model, 16.0) == (own, "")
    with pytest.raises(ValueError, match=r"train/a: memory_gb 3 is more than any Ray node has \(2.0 GiB\)"):
        with_memory(own, model, 2.0)
    capped, note = with_memory(est, model, 5.0)
    assert capped.memory_gb == 4.5 and "capped" in note and est.memory_gb is None
    assert capped.config is est.config  # the validated algorithm config travels with the copy


def test_memory_kill_reads_ray_numbers():
    assert memory_kill(ray.exceptions.OutOfMemoryError(OOM)) == \
        "it used 12.40GB; the node had 22.59GB of 23.54GB in use"
    assert memory_kill(ValueError("bad row")) is None


def test_memory_kill_reads_an_actor_killed_by_the_memory_monitor():
    died = ray.exceptions.RayActorError(error_msg=ray.exceptions.ActorDiedError.BASE_ERROR_MSG + "\n" + OOM)
    assert memory_kill(died) == "it used 12.40GB; the node had 22.59GB of 23.54GB in use"
    assert memory_kill(ray.exceptions.RayActorError(error_msg="The actor died unexpectedly")) is None


def test_engine_estimate_counts_weights_and_kv_cache(tmp_path):
    """Measured peaks (benchmarks/engine_memory.py, SmolLM2-135M): vLLM kv_cache_gb 1 multiprocess 3.62 GiB,
    in-process 2.37; HF hf_batch_size 16, n 4, 128 tokens 1.19. The estimate covers each, by < 1.5x."""
    from data_gen.config import SamplerConfig

    model = smollm2_shaped(tmp_path)
    vllm = SamplerConfig(engine="vllm", max_tokens=128)
    assert 3.62 <= engine_memory_gb(vllm, model, "vllm", 4) <= 1.5 * 3.62
    in_process = vllm.model_copy(update={"vllm_in_process": True})
    assert 2.37 <= engine_memory_gb(in_process, model, "vllm", 4) <= 1.5 * 2.37
    bigger_cache = vllm.model_copy(update={"kv_cache_gb": 3.0})
    assert engine_memory_gb(bigger_cache, model, "vllm") == engine_memory_gb(vllm, model, "vllm") + 2.0
    on_gpu = vllm.model_copy(update={"num_gpus_per_actor": 1})  # the cache lives on the GPU
    assert engine_memory_gb(on_gpu, model, "vllm") < engine_memory_gb(in_process, model, "vllm")
    hf = SamplerConfig(engine="hf", max_tokens=128, hf_batch_size=16)
    assert 1.19 <= engine_memory_gb(hf, model, "hf", 4) <= 1.5 * 1.19
    assert engine_memory_gb(hf, model, "hf", 16) > engine_memory_gb(hf, model, "hf", 4)  # more sequences


def test_fit_memory_keeps_refuses_and_caps():
    assert fit_memory("engine", 2.0, lambda: 99.0, 16.0) == (2.0, "")
    with pytest.raises(ValueError, match=r"engine: memory_gb 20 is more than any Ray node has \(16.0 GiB\)"):
        fit_memory("engine", 20.0, lambda: 1.0, 16.0)
    capped = (14.4, "estimated 30.0 GiB, capped to 90% of the node's 16.0 GiB")
    assert fit_memory("engine", None, lambda: 30.0, 16.0) == capped


def test_disk_refusal_gives_the_numbers(tmp_path):
    check_disk(tmp_path, [("generate", 1024)])
    with pytest.raises(OSError, match=rf"{tmp_path}: not enough disk: the stages to run need about 2097153.00 GiB "
                                      r"\(generate 1.00, train/dft 2097152.00\), the filesystem has [\d.]+ GiB free"):
        check_disk(tmp_path, [("generate", 2**30), ("train/dft", 2**51)])


# --- the train stage: Ray's memory resource, and one lone retry of an entry killed for memory -----------

@ray.remote(num_cpus=0)
def fake_train(name: str, out: str, oom: bool):
    if oom:
        raise ray.exceptions.OutOfMemoryError(OOM)
    return {"steps": 1, "memory": ray.get_runtime_context().get_assigned_resources().get("memory", 0)}


def test_killed_for_memory_retries_once_alone_then_reports(tmp_path, monkeypatch):
    from workbench.trainers import launch as launch_mod

    model = str(save_random_toy_model(tmp_path / "model"))
    recipe = parse_recipe({"run": {"name": "t", "out_dir": str(tmp_path)}, "model": model,
                           "train": [{"name": n, "algorithm": "sft", "memory_gb": 0.25} for n in "abc"]},
                          "t.yaml")
    pipe = Pipeline(recipe)
    calls = []

    def fake_launch(entry, train_fn, *args, out_dir, trainer_cls=None, **_):
        finished = sorted(p.parent.name for p in (tmp_path / "t" / "train").glob("*/manifest.json"))
        calls.append((entry.name, finished))
        oom = entry.name == "c" or (entry.name == "a" and [c[0] for c in calls].count("a") == 1)
        return fake_train.remote(entry.name, str(out_dir), oom)

    ray.init(num_cpus=1, include_dashboard=False)
    try:
        # the real launch reserves the entry's memory_gb as Ray's `memory` resource
        assigned = ray.get(launch_mod.launch(recipe.train[0], lambda: ray.get_runtime_context()
                                             .get_assigned_resources(), out_dir=tmp_path))
        assert assigned.get("memory") == 0.25 * 2**30, assigned
        monkeypatch.setattr(launch_mod, "launch", fake_launch)
        with pytest.raises(RuntimeError, match=r"train/c: killed for memory twice, the second time alone "
                                               r"\(reserved 0.25 GiB; it used 12.40GB"):
            train_stage.run_train_stages(pipe, [s for s in pipe.stages if s.kind == "train"], model)
    finally:
        ray.shutdown()
    names = [c[0] for c in calls]
    assert names[:3] == ["a", "b", "c"] and sorted(names[3:]) == ["a", "c"]
    assert all("b" in done for name, done in calls[3:])  # the retries started after b had finished
    assert (tmp_path / "t" / "train" / "a" / "manifest.json").is_file()
    assert json.loads((tmp_path / "t" / "train" / "b" / "manifest.json").read_text())["counts"]["steps"] == 1
