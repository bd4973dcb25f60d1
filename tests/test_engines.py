"""engines.py: an engine actor lost while sampling is replaced and only the shards it had not finished are
sampled again, giving the samples of an uninterrupted run (HF engine, reseeded per shard)."""

import pytest

from data_gen.config import GenerateConfig
from data_gen.engines import sample
from data_gen.samplers import render_prompts
from data_gen.shards import ShardStore
from workbench.template import TemplateConfig
from workbench.toy_model import save_random_toy_model

# 24 prompts in shards of 4 (hf_batch_size 1): 6 shards, 3 per actor
PROMPTS = [f"{a}+{b}" for a in range(4) for b in range(6)]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return str(save_random_toy_model(tmp_path_factory.mktemp("toy")))


def texts(rows):
    return [[c.text for c in r] for r in rows]


@pytest.mark.slow  # 106 s on this 2-core machine under a load average near 20 (5 engine actors start)
def test_a_lost_engine_is_replaced_and_only_its_unfinished_shards_are_redone(model_dir, ray_local, tmp_path,
                                                                            monkeypatch, capsys):
    cfg = GenerateConfig(engine="hf", max_tokens=16, num_actors=2, num_cpus_per_actor=1, dtype="float32",
                         hf_batch_size=1)
    prompts = render_prompts(model_dir, PROMPTS, TemplateConfig())
    whole = sample(model_dir, prompts, cfg, n=2, seed=5, desc="whole")
    saves, real_save = [], ShardStore.save

    def save(self, k, s, e, completions):  # the moment engine 1's first shard is saved, engine 1 dies
        real_save(self, k, s, e, completions)
        saves.append(k)
        if k == 1:
            (victim,) = [a for a in ray_local.util.list_named_actors() if a.startswith("cut: engine 1 ")]
            ray_local.kill(ray_local.get_actor(victim))

    monkeypatch.setattr(ShardStore, "save", save)
    capsys.readouterr()
    cut = sample(model_dir, prompts, cfg, n=2, seed=5, desc="cut", shards=ShardStore(tmp_path))
    out = capsys.readouterr().out
    assert "cut: engine 1 was lost (" in out, out
    redone = int(out.split("sampling its ")[1].split()[0])
    assert 1 <= redone <= 2  # at most engine 1's shards after its first
    assert sorted(saves) == list(range(6))  # every shard saved once: a finished one is never sampled again
    assert texts(cut) == texts(whole)
