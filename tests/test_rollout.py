"""Rollout engines: the sampled token ids are kept as sampled, and the vLLM engine's weights follow the actor's
(after a sync, vLLM's greedy completions equal HF's greedy completions of the updated actor)."""

import json

import pytest
import torch

from workbench.trainers.rollout import HFRollout, response_ids

MAX_TOKENS = 40


def test_response_ids_keep_sampled_ids_and_add_a_missing_stop_only():
    assert response_ids([5, 6, 2], "stop", [2, 3], 10) == [5, 6, 2]  # the stop token is kept, once
    assert response_ids([5, 6, 3], "stop", [2, 3], 10) == [5, 6, 3]  # ended by end-of-turn: no EOS added
    assert response_ids([5, 6], "stop", [2, 3], 10) == [5, 6, 2]  # an engine that dropped it: EOS appended
    assert response_ids([5, 6, 7], "length", [2], 2) == [5, 6]  # cut by max_tokens: nothing appended
    assert response_ids([], "stop", [2], 5) == [2]


@pytest.fixture(scope="module")
def toy():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from data_gen.config import ToyTaskConfig
    from data_gen.samplers import stop_token_ids
    from data_gen.toy import toy_prompts
    from workbench.models import resolve_model, toy_template
    from workbench.template import render_prompt

    base = resolve_model("toy:arith")
    tok = AutoTokenizer.from_pretrained(base)
    data = toy_prompts(ToyTaskConfig(min_ops=2, max_ops=2, max_digits=1), 8, seed=1)
    prompts = [render_prompt(tok, p, toy_template()) for p in data["problem"]]
    actor = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    return {"base": base, "tok": tok, "prompts": prompts, "data": data, "actor": actor,
            "stops": stop_token_ids(tok, actor.generation_config)}


def _ids(rows):
    return [r[0].token_ids for r in rows]


def test_hf_rollout_keeps_the_stop_token_it_sampled(toy):
    rows = HFRollout(toy["actor"], toy["tok"], toy["stops"]).generate(toy["prompts"], 2, 1.0, 1.0, MAX_TOKENS)
    stopped = [r for row in rows for r in row if r.finish_reason == "stop"]
    assert stopped, "the toy model ends its answers"
    for r in stopped:
        assert r.token_ids[-1] in toy["stops"] and toy["stops"][0] not in r.token_ids[:-1]
        assert toy["tok"].decode(r.token_ids[:-1]) == r.text
    assert all(len(r.token_ids) <= MAX_TOKENS for row in rows for r in row)


@pytest.fixture(scope="module")
def engine(toy):
    from workbench.trainers.rollout import VLLMRollout

    # float32 so that vLLM's and HF's greedy choices are the same computation up to kernel rounding
    eng = VLLMRollout(toy["base"], toy["tok"], toy["stops"], seed=0, dtype="float32", kv_cache_gb=0.125)
    yield eng
    eng.close()


def test_vllm_greedy_equals_hf_greedy_of_the_updated_actor_after_sync(engine, toy):
    from transformers import AutoModelForCausalLM

    threads = torch.get_num_threads()
    actor = AutoModelForCausalLM.from_pretrained(toy["base"], dtype=torch.float32)
    hf = HFRollout(actor, toy["tok"], toy["stops"])
    greedy = (toy["prompts"], 1, 0.0, 1.0, MAX_TOKENS)
    assert _ids(engine.generate(*greedy)) == _ids(hf.generate(*greedy))
    torch.manual_seed(0)
    with torch.no_grad():  # an update of every weight, the tied embedding / LM head included
        for p in actor.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    want = _ids(hf.generate(*greedy))
    assert _ids(engine.generate(*greedy)) != want  # the engine is stale until synced: the check below can fail
    engine.sync(actor)
    assert _ids(engine.generate(*greedy)) == want
    stopped = [r for row in engine.generate(toy["prompts"], 2, 1.0, 1.0, MAX_TOKENS) for r in row
               if r.finish_reason == "stop"]
    assert stopped and all(r.token_ids[-1] in toy["stops"] for r in stopped)  # vLLM keeps its stop token
    # the in-process vLLM worker pins torch to one thread and disables set_num_threads; the engine undoes it
    assert torch.get_num_threads() == threads
    torch.set_num_threads(1)
    assert torch.get_num_threads() == 1
    torch.set_num_threads(threads)


class _Kept:
    """The module's engine lent to one PPO run (PPO closes its engine at the end)."""

    def __init__(self, engine):
        self.engine = engine

    def __getattr__(self, name):
        return getattr(self.engine, name)

    def close(self):
        pass


def test_ppo_rolls_out_with_vllm_and_leaves_the_engine_synced(engine, toy, tmp_path):
    from transformers import AutoModelForCausalLM

    from workbench.models import toy_template
    from workbench.trainers.base import TrainJob
    from workbench.trainers.ppo import PPOConfig, PPOTrainerPlugin

    class PPOOnModuleEngine(PPOTrainerPlugin):
        def rollout_engine(self, kind, job, cfg, actor, tokenizer, stops):
            assert kind == "vllm"
            return _Kept(engine)

    job = TrainJob(base_model=toy["base"], data=toy["data"], template=toy_template(), out_dir=tmp_path, seed=0)
    cfg = PPOConfig(learning_rate=1e-3, critic_learning_rate=1e-3, rollout_batch_size=8, samples_per_prompt=2,
                    batch_size=16, per_device_batch_size=16, max_steps=3, max_completion_length=MAX_TOKENS,
                    rollout_engine="vllm")
    result = PPOOnModuleEngine().train(job, cfg)
    rows = [json.loads(line) for line in job.metrics_path.read_text().splitlines()]
    assert result.extra["rollout_engine"] == "vllm" and len(rows) == 3
    assert all(0 <= r["reward"] <= 1 and r["sync_s"] >= 0 for r in rows)
    trained = AutoModelForCausalLM.from_pretrained(job.model_dir, dtype=torch.float32)
    greedy = (toy["prompts"], 1, 0.0, 1.0, MAX_TOKENS)
    want = _ids(HFRollout(trained, toy["tok"], toy["stops"]).generate(*greedy))
    assert want != _ids(HFRollout(toy["actor"], toy["tok"], toy["stops"]).generate(*greedy))  # PPO moved it
    assert _ids(engine.generate(*greedy)) == want
