"""Resumable sampling: shards saved as they finish (data_gen/shards.py, `sample(..., shards=)`), and a
`workbench generate` killed with SIGKILL that resumes from them with the same data as an uninterrupted run."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest

from data_gen.samplers import Completion
from data_gen.shards import ShardStore

ROOT = Path(__file__).resolve().parents[1]
WORKBENCH = str(Path(sys.executable).parent / "workbench")


def test_shard_round_trip_and_bounds(tmp_path):
    store = ShardStore(tmp_path / "shards")
    comps = [[Completion("a", 1, "stop"), Completion("bb", 2, "length")], [Completion("c", 1, "stop")] * 2]
    store.save(3, 10, 12, comps)
    assert [p.name for p in store.folder.iterdir()] == ["shard-00003-10-12.parquet"]  # no temporary left
    assert store.load(3, 10, 12) == comps and store.reused == 1
    assert store.load(3, 10, 13) is None and store.load(4, 10, 12) is None  # another slice: not reused


def test_unreadable_shard_is_sampled_again(tmp_path):
    store = ShardStore(tmp_path)
    store.save(0, 0, 1, [[Completion("a", 1, "stop")]])
    store.path(0, 0, 1).write_bytes(b"half a parquet")
    assert store.load(0, 0, 1) is None and store.reused == 0


RECIPE = """run: {{name: gen, seed: 3, out_dir: {out}}}
model: toy:arith
prompts: {{source: toy, max_prompts: 96}}
template: {{instruction: "Put the answer in \\\\boxed{{}}.", user_format: "{{problem}}", use_chat_template: false,
           plain_format: "Q: {{user}}\\nA:"}}
generate: {{engine: hf, n: 2, temperature: 1.0, max_tokens: 64, hf_batch_size: 4}}
ray: {{num_cpus: 1}}
"""  # 96 prompts in shards of 4 * hf_batch_size = 16: 6 shards


def start(recipe, out):
    return subprocess.Popen([WORKBENCH, "generate", str(recipe), "--out", str(out)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)  # its own process group: Ray's processes die with it


@pytest.mark.slow
def test_kill_9_during_generate_resumes_from_shards_with_the_same_samples(tmp_path):
    recipe = tmp_path / "gen.yaml"
    recipe.write_text(RECIPE.format(out=tmp_path))
    reference = start(recipe, tmp_path / "uninterrupted")  # side by side with the run that gets killed
    killed = start(recipe, tmp_path / "killed")
    shards = tmp_path / "killed" / ".partial-generate" / "shards"
    deadline = time.time() + 600
    while not list(shards.glob("shard-*.parquet")):
        assert killed.poll() is None and time.time() < deadline, killed.stdout.read()
        time.sleep(0.02)
    os.killpg(killed.pid, signal.SIGSTOP)  # freeze the driver and its Ray processes, then kill them all
    saved = {p.name: p.read_bytes() for p in shards.glob("shard-*.parquet")}
    os.killpg(killed.pid, signal.SIGKILL)
    killed.wait()
    assert not (tmp_path / "killed" / "generate").exists() and 1 <= len(saved) < 6

    out, _ = reference.communicate(timeout=600)
    assert reference.returncode == 0, out
    resumed = start(recipe, tmp_path / "killed")
    out, _ = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, out
    assert f"generate: reused {len(saved)} of 6 shards" in out, out
    assert not (tmp_path / "killed" / ".partial-generate").exists()  # committed: nothing left in progress
    a = pl.read_parquet(tmp_path / "killed" / "generate" / "samples.parquet")
    b = pl.read_parquet(tmp_path / "uninterrupted" / "generate" / "samples.parquet")
    assert a.height == 96 * 2 and a.equals(b)


def test_eval_shards_are_keyed_by_what_the_samples_depend_on(tmp_path):
    from evaluators.config import EvaluateConfig
    from evaluators.evaluate import eval_shards
    from workbench.toy_model import save_random_toy_model

    model = str(save_random_toy_model(tmp_path / "model"))
    cfg = EvaluateConfig(benchmarks=["toy-id"], k=2)
    same = eval_shards(tmp_path, model, ["Q: 1+1"], cfg, 0).folder
    assert same == eval_shards(tmp_path, model, ["Q: 1+1"], cfg, 0).folder
    others = {eval_shards(tmp_path, model, ["Q: 1+2"], cfg, 0).folder,
              eval_shards(tmp_path, model, ["Q: 1+1"], cfg, 1).folder,
              eval_shards(tmp_path, model, ["Q: 1+1"], cfg.model_copy(update={"k": 4}), 0).folder}
    (Path(model) / "model.safetensors").write_bytes(b"retrained")  # same path, other weights
    others.add(eval_shards(tmp_path, model, ["Q: 1+1"], cfg, 0).folder)
    assert same not in others and len(others) == 4
