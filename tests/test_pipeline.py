"""The controller's caching and crash semantics, with small stand-in stage functions.

The stages' real implementations have their own tests and the end-to-end smoke test; here each stage
is replaced by a function that writes a file and records that it ran, so the tests can check exactly
which stages a (re)run executes.
"""

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import ray

from workbench import pipeline as pl_mod
from workbench.pipeline import Pipeline
from workbench.recipe import parse_recipe
from workbench.toy_model import save_random_toy_model

CALLS: list[str] = []


def fake(kind):
    def stage(ctx):
        CALLS.append(kind if kind not in ("eval",) else f"eval/{ctx.extra['model_name']}")
        for name, folder in ctx.inputs.items():
            assert (folder / "manifest.json").is_file(), f"{kind} got an unfinished input {name}"
        if kind == "generate" and ctx.recipe.generate.temperature == 13.0:
            (ctx.out / "half.parquet").write_text("half written")
            raise RuntimeError("killed halfway")
        if kind == "prompts":
            # a real remote call: proves stages can use the Ray the controller connected to
            nodes = ray.get(ray.remote(lambda: len(ray.nodes())).remote())
            (ctx.out / "ray.txt").write_text(str(ray.get_runtime_context().gcs_address))
            return {"nodes": nodes}
        (ctx.out / f"{kind}.txt").write_text(kind)
        return {"rows": 1}

    return stage


@pytest.fixture()
def stages(monkeypatch):
    for kind in pl_mod.STAGE_FUNCTIONS:
        monkeypatch.setitem(pl_mod.STAGE_FUNCTIONS, kind, fake(kind))
    CALLS.clear()
    yield CALLS
    if ray.is_initialized():
        ray.shutdown()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return str(save_random_toy_model(tmp_path_factory.mktemp("model")))


def recipe(model_dir, tmp_path, *overrides):
    data = {"run": {"name": "t", "out_dir": str(tmp_path)}, "model": model_dir, "ray": {"num_cpus": 1}}
    return parse_recipe(data, "test.yaml", list(overrides))


def test_rerun_recomputes_nothing(stages, model_dir, tmp_path):
    Pipeline(recipe(model_dir, tmp_path)).run()
    assert stages == ["prompts", "generate", "verify", "build", "eval/base", "report"]
    manifest = (tmp_path / "t" / "generate" / "manifest.json").read_text()
    assert '"input_hash"' in manifest and '"versions"' in manifest and '"wall_time_s"' in manifest
    stages.clear()
    Pipeline(recipe(model_dir, tmp_path)).run()
    assert stages == []


def test_changed_temperature_reruns_generate_and_downstream_only(stages, model_dir, tmp_path):
    Pipeline(recipe(model_dir, tmp_path)).run()
    stages.clear()
    pipe = Pipeline(recipe(model_dir, tmp_path, "generate.temperature=0.7"))
    assert {s.name: done for s, done in pipe.status()} == {
        "prompts": True, "generate": False, "verify": False, "build": False, "eval/base": True,
        "report": False}
    pipe.run()
    assert stages == ["generate", "verify", "build", "report"]


def test_stage_that_raises_leaves_no_folder_and_next_run_completes(stages, model_dir, tmp_path):
    with pytest.raises(RuntimeError, match="killed halfway"):
        Pipeline(recipe(model_dir, tmp_path, "generate.temperature=13.0")).run()
    run_dir = tmp_path / "t"
    assert (run_dir / "prompts" / "manifest.json").is_file()
    assert not (run_dir / "generate").exists()
    assert not list(run_dir.glob(".tmp-*"))
    stages.clear()
    Pipeline(recipe(model_dir, tmp_path)).run()
    assert stages == ["generate", "verify", "build", "eval/base", "report"]  # prompts was kept


def test_killed_run_leftovers_are_cleaned(stages, model_dir, tmp_path):
    leftover = tmp_path / "t" / ".tmp-generate-deadbeef"
    leftover.mkdir(parents=True)
    Pipeline(recipe(model_dir, tmp_path)).run()
    assert not leftover.exists()


def test_upto_runs_only_what_a_stage_needs(stages, model_dir, tmp_path):
    Pipeline(recipe(model_dir, tmp_path)).run(upto="verify")
    assert stages == ["prompts", "generate", "verify"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_recipe_ray_address_joins_a_separately_started_head(stages, model_dir, tmp_path):
    port = free_port()
    ray_bin = Path(sys.executable).parent / "ray"
    # Ray 2.60 turns on token authentication for `ray start`; a local test cluster opts out.
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    head = subprocess.Popen(
        [str(ray_bin), "start", "--head", "--block", f"--port={port}", "--node-ip-address=127.0.0.1",
         "--num-cpus=1", "--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={tempfile.mkdtemp(prefix='ray', dir='/tmp')}"],  # short: socket paths
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, env=env)
    try:
        deadline = time.time() + 120
        while True:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if time.time() > deadline or head.poll() is not None:
                pytest.fail("ray head did not start")
            time.sleep(1)
        time.sleep(3)  # the GCS listens before the head's raylet has registered
        Pipeline(recipe(model_dir, tmp_path, f"ray.address=127.0.0.1:{port}")).run(upto="prompts")
        gcs = (tmp_path / "t" / "prompts" / "ray.txt").read_text()
        assert gcs.endswith(f":{port}"), gcs
    finally:
        if ray.is_initialized():
            ray.shutdown()
        try:
            os.killpg(head.pid, signal.SIGTERM)  # the head and every process it started
        except ProcessLookupError:
            pass
        head.wait(timeout=90)


def test_seeds_plan_data_once_and_train_eval_per_seed(tmp_path):
    import copy

    from workbench.cli import with_seeds
    from workbench.pipeline import plan

    train = {"train": [{"name": "dft", "algorithm": "dft"}, {"name": "rft", "algorithm": "rft"}]}
    data = {"run": {"name": "t", "out_dir": str(tmp_path)}, "model": "toy:arith", **train}  # planning only
    stages = {s.name: s for s in plan(parse_recipe(copy.deepcopy(data), "t.yaml", with_seeds([], "0,1,2")))}
    data_stages = ["prompts", "generate", "verify", "build"]
    at = {0: "", 1: "@s1", 2: "@s2"}  # run.seed (0) keeps the plain names
    per_seed = [f"{kind}/{m}{at[s]}" for kind, ms in [("train", ["dft", "rft"]), ("eval", ["base", "dft", "rft"])]
                for m in ms for s in (0, 1, 2)]
    assert sorted(stages) == sorted([*data_stages, *per_seed, "report"])
    assert stages["eval/dft@s2"].deps == ["train/dft@s2"] and stages["train/dft@s2"].deps == ["build"]
    assert [stages[f"train/dft{at[s]}"].config["seed"] for s in (0, 1, 2)] == [0, 1, 2]
    assert len({stages[f"eval/base{at[s]}"].input_hash for s in (0, 1, 2)}) == 3
    assert set(per_seed) <= set(stages["report"].deps)
    # one seed keeps a single run's stage names and hashes, so existing runs stay cached, and adding seeds
    # to a finished one-seed run reuses every stage of its seed (report aside: it now covers three seeds)
    one = {s.name: s.input_hash for s in plan(parse_recipe(copy.deepcopy(data), "t.yaml"))}
    assert one == {s.name: s.input_hash for s in plan(parse_recipe(data, "t.yaml", ["run.seeds=[0]"]))}
    assert "train/dft" in one and "eval/base" in one and not any("@s" in name for name in one)
    assert {n: h for n, h in one.items() if n != "report"} == {n: stages[n].input_hash for n in one if n != "report"}
    assert one["build"] == stages["build"].input_hash  # the data is the same whatever the seeds


def test_damaged_output_reruns_its_stage_and_dependants_naming_the_file(stages, model_dir, tmp_path, capsys):
    from test_rundir import corrupt, delete, truncate

    Pipeline(recipe(model_dir, tmp_path)).run()
    for damage in (corrupt, truncate, delete):
        stages.clear()
        target = tmp_path / "t" / "generate" / "generate.txt"
        damage(target)
        Pipeline(recipe(model_dir, tmp_path)).run()
        assert stages == ["generate", "verify", "build", "report"], damage.__name__
        assert f"generate runs again: {target}" in " ".join(capsys.readouterr().out.split())


def test_changing_the_verifier_retrains_online_entries_only(tmp_path):
    """GRPO/PPO's reward is the recipe's verifier: changing it reruns them; offline entries follow build."""
    import copy

    from workbench.pipeline import plan

    train = {"train": [{"name": "dft", "algorithm": "dft"}, {"name": "grpo", "algorithm": "grpo"}]}
    data = {"run": {"name": "t", "out_dir": str(tmp_path)}, "model": "toy:arith", **train}  # planning only
    before = {s.name: s.input_hash for s in plan(parse_recipe(copy.deepcopy(data), "t.yaml"))}
    after = {s.name: s.input_hash for s in plan(parse_recipe(data, "t.yaml", ["verify.verifier=exact"]))}
    changed = {name for name in before if before[name] != after[name]}
    assert {"train/grpo", "eval/grpo", "verify", "build", "train/dft"} <= changed
    assert "prompts" not in changed and "generate" not in changed
    table1 = {"run": {"name": "t", "out_dir": str(tmp_path)}, "model": "toy:arith",
              "train": [{"name": "grpo", "algorithm": "grpo"}]}  # no verify stage at all
    one = plan(parse_recipe(copy.deepcopy(table1), "t.yaml"))
    two = plan(parse_recipe(table1, "t.yaml", ["verify.verifier=exact"]))
    assert {s.name for s in one if s.kind == "train"} == {"train/grpo"}
    assert [s.input_hash for s in one if s.name == "train/grpo"] != [s.input_hash for s in two
                                                                       if s.name == "train/grpo"]
