"""PPO with N Ray Train workers (FSDP2 over gloo) and a killed run's resume: the same numbers as one worker, the
same run as an uninterrupted one. The single-process math and toy runs are in test_ppo.py."""

import json
import sys

import pytest
import torch
from test_ppo import _toy_job

from workbench.trainers import ppo_models
from workbench.trainers.ppo import PPOConfig, PPOTrainerPlugin

PPO_SMALL = {"learning_rate": 1e-3, "critic_learning_rate": 1e-3, "kl_coef": 0.05, "rollout_batch_size": 8,
             "samples_per_prompt": 2, "per_device_batch_size": 4, "max_completion_length": 24, "rollout_engine": "hf"}


class FixedResponses:
    """A rollout engine whose responses are a function of the prompt alone (right for even prompts, wrong for
    odd), so 1 and 2 workers train on the same batch whatever their sampling RNG."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    def generate(self, prompts, n, temperature, top_p, max_tokens):
        from workbench.trainers.rollout import Rollout

        out = []
        for p in prompts:
            text = f" \\boxed{{{len(p) % 7}}}" * (1 + len(p) % 3)
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"][:max_tokens]
            out.append([Rollout(ids + [self.tokenizer.eos_token_id], text, "stop")] * n)
        return out

    def sync(self, actor):
        return 0.0

    def close(self):
        pass


class PPOOnFixedResponses(PPOTrainerPlugin):
    def rollout_engine(self, kind, job, cfg, actor, tokenizer, stops):
        return FixedResponses(tokenizer)


def _ppo_run(out, plugin=PPOTrainerPlugin, save_steps=0, **cfg):
    """Runs in every Ray Train worker (and in-process for 1 worker)."""
    job = _toy_job(out, n_prompts=16)
    job.save_steps = save_steps
    result = plugin().train(job, PPOConfig(**{**PPO_SMALL, **cfg}))
    return {"steps": result.steps, **result.extra}


def _rows(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def _weights(model_dir):
    from safetensors.torch import load_file

    return load_file(f"{model_dir}/model.safetensors")


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory):
    """One 2-worker Ray Train group (gloo, FSDP2) runs: PPO on fixed responses (one minibatch per rollout
    batch, so the update does not depend on how the batch is split), and PPO with real HF rollouts on each
    worker's own synced copy, checkpointing every step."""
    import ray

    from workbench.models import resolve_model
    from workbench.recipe import TrainEntry
    from workbench.trainers.launch import launch

    resolve_model("toy:arith")  # built before the workers look for it
    tmp = tmp_path_factory.mktemp("ppo-workers")
    for module in (__name__, "test_ppo"):  # workers cannot import tests/
        ray.cloudpickle.register_pickle_by_value(sys.modules[module])
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    try:
        entry = TrainEntry(name="ppo", algorithm="ppo", num_workers=2, num_cpus=1)
        runs = [(tmp / "fixed-two", PPOOnFixedResponses, 0, {"max_steps": 2, "batch_size": 16}),
                (tmp / "hf-two", PPOTrainerPlugin, 1, {"max_steps": 2, "batch_size": 8})]
        two = ray.get(launch(entry, lambda: [_ppo_run(o, p, s, **c) for o, p, s, c in runs], out_dir=tmp))
    finally:
        ray.shutdown()
    return tmp, two


def test_two_workers_make_the_single_worker_update(two_workers, tmp_path):
    """FSDP2 over actor, critic and reference, the whole batch's whitening and token means: on the same samples,
    2 workers log the numbers 1 worker logs and save the same actor."""
    tmp, two = two_workers
    one = _ppo_run(tmp_path, PPOOnFixedResponses, max_steps=2, batch_size=16)
    assert (one["num_workers"], two[0]["num_workers"]) == (1, 2)
    a, b = _rows(tmp_path), _rows(tmp / "fixed-two")
    assert [r["step"] for r in a] == [r["step"] for r in b] == [1, 2]
    for ra, rb in zip(a, b):
        for key in ("reward", "kl", "policy_loss", "value_loss", "kl_loss", "entropy", "response_length",
                    "num_tokens"):
            assert rb[key] == pytest.approx(ra[key], rel=1e-4, abs=1e-6), (key, ra, rb)
    assert a[1]["kl"] > 0 and a[1]["value_loss"] != a[0]["value_loss"]  # the first update moved both models
    wa, wb = _weights(tmp_path / "model"), _weights(tmp / "fixed-two" / "model")
    assert wa.keys() == wb.keys()
    for name in wa:
        assert (wa[name] - wb[name]).abs().max() < 1e-4, name


def test_two_workers_roll_out_on_synced_copies_and_checkpoint(two_workers):
    from transformers import AutoModelForCausalLM

    from workbench.trainers.checkpoint import list_checkpoints

    tmp, two = two_workers
    assert two[1]["steps"] == 2 and two[1]["rollout_engine"] == "hf"
    rows = _rows(tmp / "hf-two")
    assert [r["step"] for r in rows] == [1, 2] and all(r["sync_s"] > 0 for r in rows)
    assert list_checkpoints(tmp / "hf-two") == []  # finished: the resumable state is gone
    AutoModelForCausalLM.from_pretrained(tmp / "hf-two" / "model")


def test_hf_rollout_copy_follows_the_actor(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from workbench.models import resolve_model
    from workbench.trainers.rollout import HFRollout

    base = resolve_model("toy:arith")
    actor, copy = (AutoModelForCausalLM.from_pretrained(base) for _ in range(2))
    with torch.no_grad():
        actor.model.layers[0].mlp.down_proj.weight.add_(0.5)
    engine = HFRollout(actor, AutoTokenizer.from_pretrained(base), [256], own_copy=copy)
    assert engine.actor is copy and engine.sync(actor) > 0
    assert torch.equal(copy.model.layers[0].mlp.down_proj.weight, actor.model.layers[0].mlp.down_proj.weight)


def test_resumed_run_equals_uninterrupted_run(tmp_path, monkeypatch):
    """Killed after step 2 with a checkpoint every step, the rerun resumes at step 2 and ends where an
    uninterrupted run ends: same rewards and losses per step (HF rollouts resume their RNG), same actor."""
    from test_checkpoint import Killed, die_after_logging

    cfg = {"max_steps": 4, "batch_size": 8}
    whole = _ppo_run(tmp_path / "whole", save_steps=1, **cfg)
    with monkeypatch.context() as m:
        die_after_logging(m, 3)
        with pytest.raises(Killed):
            _ppo_run(tmp_path / "cut", save_steps=1, **cfg)
    resumed = _ppo_run(tmp_path / "cut", save_steps=1, **cfg)
    assert (whole["resumed_from_step"], resumed["resumed_from_step"]) == (0, 2)
    a, b = _rows(tmp_path / "whole"), _rows(tmp_path / "cut")
    assert [r["step"] for r in b] == [1, 2, 3, 4]
    for ra, rb in zip(a, b):
        for key in ("reward", "policy_loss", "value_loss", "kl", "num_tokens", "learning_rate"):
            assert rb[key] == pytest.approx(ra[key], rel=1e-6, abs=1e-7), (key, ra, rb)
    wa, wb = _weights(tmp_path / "whole" / "model"), _weights(tmp_path / "cut" / "model")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_entries_workers_cannot_share_are_refused_when_the_recipe_loads():
    from workbench.recipe import RecipeError, parse_recipe

    def load(**ppo):
        return parse_recipe({"run": {"name": "r"}, "model": "toy:arith",
                             "train": [{"name": "p", "algorithm": "ppo", **ppo}]}, "x.yaml")

    load(num_workers=2, rollout_batch_size=8, batch_size=4, save_steps=2)
    with pytest.raises(RecipeError, match=r"x.yaml: train\[0\].num_workers: ppo: rollout_batch_size=9 is not"):
        load(num_workers=2, rollout_batch_size=9)
    with pytest.raises(RecipeError, match=r"train\[0\].num_workers: ppo: batch_size=3 sequences"):
        load(num_workers=2, rollout_batch_size=8, batch_size=3)
    with pytest.raises(RecipeError, match=r"train\[0\].batch_size: ppo: batch_size=12 is not a multiple of "
                       r"per_device_batch_size x num_workers = 4 x 2"):
        load(num_workers=2, rollout_batch_size=16, batch_size=12, per_device_batch_size=4)
    with pytest.raises(ValueError, match="ppo: rollout_batch_size: 1 prompts cannot be shared by num_workers=2"):
        ppo_models.plan(PPOConfig(rollout_batch_size=8), 1, 2)
