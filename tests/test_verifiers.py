"""Verifier plugins: the built-ins, the rules every verifier runs under (deadline, statuses, main thread,
error budget), recipe validation, a third-party verifier from a test distribution, and a verify run in
Ray tasks with the code verifier on hostile programs."""

import sys
import threading
import time
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from data_gen.config import VerifyConfig
from data_gen.verifiers import Grade, Verifier, VerifierError, grade_many, make_verifier, reward, verify_frame
from data_gen.verifiers.frame import verify_benchmarks
from data_gen.verifiers.sandbox import bwrap_path
from workbench import registry
from workbench.recipe import RecipeError, parse_recipe

PLUGIN_PKG = Path(__file__).parent / "plugin_pkg"
ENTRY_POINTS = "[workbench.verifiers]\nnear = wb_verifier_plugin:NearVerifier\n"


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory):
    """tests/plugin_pkg installed as a distribution (a *.dist-info with entry_points.txt) on sys.path."""
    site = tmp_path_factory.mktemp("site")
    info = site / "wb_verifier_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: wb-verifier-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(ENTRY_POINTS)
    paths = [str(site), str(PLUGIN_PKG)]
    sys.path[:0] = paths
    registry.reload()
    yield paths
    for p in paths:
        sys.path.remove(p)
    sys.modules.pop("wb_verifier_plugin", None)
    registry.reload()


class Sleepy(Verifier):
    name = "sleepy"

    def grade(self, response, gold, timeout_s):
        try:
            time.sleep(60)
        except Exception:  # noqa: BLE001, S110 - a careless verifier: the deadline must still get through
            pass
        return Grade(True, None, "ok")


class Broken(Verifier):
    name = "broken"

    def grade(self, response, gold, timeout_s):
        raise KeyError("bug")


def test_builtins_registered_and_listed():
    assert {"math", "exact", "code"} <= set(registry.plugins(registry.VERIFIERS))
    from workbench.cli import app

    result = CliRunner().invoke(app, ["verifiers"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert any(line.startswith("code\toptions: sandbox,cpu_s,memory_mb") for line in lines), lines
    assert any(line.startswith("math\t") for line in lines)


@pytest.mark.parametrize("response,gold,correct,status", [
    (r"The capital is \boxed{Paris}.", "paris", True, "ok"),
    ("Reasoning...\n$B$.", "b", True, "ok"),
    (r"\boxed{Lyon}", "Paris", False, "ok"),
    ("   ", "Paris", False, "no_answer"),
])
def test_exact(response, gold, correct, status):
    g = grade_many(make_verifier("exact"), [response], [gold])[0]
    assert (g.correct, g.status) == (correct, status)


def test_math_plugin_matches_the_legacy_grader():
    from data_gen.verifier import grade

    cases = [(r"\boxed{\frac{1}{2}}", "0.5"), (r"\boxed{x=4}", "3"), ("no idea", "3"), (r"\boxed{3}", "")]
    new = grade_many(make_verifier("math"), [r for r, _ in cases], [g for _, g in cases])
    assert new == [grade(r, g) for r, g in cases]
    assert [g.status for g in new] == ["ok", "ok", "no_answer", "error"]
    assert reward([r"\boxed{4}", r"\boxed{5}"], ["4", "4"]) == [1.0, 0.0]


def test_every_verifier_gets_a_deadline_and_statuses():
    start = time.monotonic()
    assert grade_many(Sleepy(), ["x"], ["1"], timeout_s=0.3)[0].status == "timeout"
    assert time.monotonic() - start < 2
    assert grade_many(Broken(), ["x"], ["1"])[0] == Grade(False, None, "error")
    assert grade_many(Broken(), ["x"], ["  "])[0].status == "error"  # unusable gold: error, not "wrong"


def test_every_verifier_refuses_a_non_main_thread():
    caught = []

    def work():
        try:
            grade_many(make_verifier("exact"), ["a"], ["a"])
        except RuntimeError as exc:
            caught.append(exc)

    t = threading.Thread(target=work)
    t.start()
    t.join()
    assert caught and "main thread" in str(caught[0])


def test_recipe_picks_and_checks_the_verifier():
    base = {"run": {"name": "t"}, "model": "toy:arith"}
    recipe = parse_recipe({**base, "verify": {"verifier": "code", "options": {"sandbox": "rlimit", "cpu_s": 2}}})
    assert recipe.verify.verifier == "code" and recipe.verify.options["cpu_s"] == 2
    with pytest.raises(RecipeError, match="verify.verifier: .*unknown verifier 'nope'"):
        parse_recipe({**base, "verify": {"verifier": "nope"}})
    with pytest.raises(RecipeError, match="verify.options: .*cpu_s: Input should be a valid integer"):
        parse_recipe({**base, "verify": {"verifier": "code", "options": {"cpu_s": "fast"}}})
    with pytest.raises(RecipeError, match="verify.options: .*colour: Extra inputs"):
        parse_recipe({**base, "verify": {"verifier": "exact", "options": {"colour": "red"}}})


def test_third_party_verifier_is_listed_and_grades(plugin_site):
    assert "near" in registry.plugins(registry.VERIFIERS)
    from workbench.cli import app

    result = CliRunner().invoke(app, ["verifiers"])
    assert any(line.startswith("near\toptions: rel_tol") for line in result.stdout.splitlines()), result.output
    recipe = parse_recipe({"run": {"name": "t"}, "model": "toy:arith",
                           "verify": {"verifier": "near", "options": {"rel_tol": 0.1}}})
    v = make_verifier(recipe.verify.verifier, recipe.verify.options)
    grades = grade_many(v, ["about 95 units", "about 80", "none", "3"], ["100", "100", "100", "not a number"])
    assert [(g.correct, g.status) for g in grades] == [(True, "ok"), (False, "ok"), (False, "no_answer"),
                                                       (False, "error")]


@pytest.mark.skipif(bwrap_path() is None, reason="bwrap not installed")
def test_verify_in_ray_with_code_on_hostile_programs(ray_local):
    """The verify stage's path (Ray tasks) through the evaluator's per-benchmark grouping: code rows graded
    by the sandbox (the stage completes, hostile programs wrong), the math row by math-verify, order kept."""
    tests = "assert inc(1) == 2\n"
    responses = ["```python\ndef inc(x):\n    return x + 1\n```", "```python\ndef inc(x):\n    return x\n```",
                 "```python\ndef inc(x):\n    return x + 1\nwhile True:\n    pass\n```",
                 "```python\nimport os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n```",
                 "no code at all"]
    df = pl.DataFrame({"benchmark": ["math500"] + ["toy-code"] * len(responses),
                       "response": [r"\boxed{3}", *responses], "answer": ["3"] + [tests] * len(responses)})
    start = time.monotonic()
    out = verify_benchmarks(df, VerifyConfig(timeout_s=2.0, chunk_size=3))
    assert time.monotonic() - start < 60
    assert out.columns[:3] == df.columns and out["response"].to_list() == df["response"].to_list()
    assert out["correct"].to_list() == [True, True, False, False, False, False]
    assert out["status"].to_list() == ["ok", "ok", "ok", "timeout", "timeout", "no_answer"]


def test_code_verifier_refuses_before_any_work_without_sandbox(monkeypatch, tmp_path):
    from data_gen.verifiers import sandbox
    from workbench.pipeline import Pipeline

    monkeypatch.setattr(sandbox, "bwrap_path", lambda: None)
    sandbox._probe_json.cache_clear()
    try:
        with pytest.raises(VerifierError, match="bwrap not found"):
            verify_frame(pl.DataFrame({"response": ["x"], "answer": ["assert True"]}), VerifyConfig(verifier="code"))
        recipe = parse_recipe({"run": {"name": "t"}, "model": "toy:arith", "verify": {"verifier": "code"},
                               "prompts": {"source": "toy-code", "max_prompts": 2}})
        with pytest.raises(VerifierError, match="refusing to run untrusted code.*sandbox: rlimit"):
            Pipeline(recipe, tmp_path / "run").run("build")
        assert not (tmp_path / "run" / "prompts").exists()  # refused before the first stage
    finally:
        sandbox._probe_json.cache_clear()


@pytest.mark.skipif(bwrap_path() is None, reason="bwrap not installed")
def test_grpo_reward_uses_the_chosen_verifier():
    from workbench.trainers.grpo import verifier_reward_func

    fn = verifier_reward_func(5.0, "code", {"cpu_s": 2})
    good, bad = "```python\ndef inc(x):\n    return x + 1\n```", "```python\ndef inc(x):\n    return x\n```"
    assert fn([good, bad], answer=["assert inc(1) == 2\n"] * 2) == [1.0, 0.0]
    assert verifier_reward_func(5.0)([r"\boxed{2}"], answer=["2"]) == [1.0]  # math by default


def test_train_entry_hands_the_recipe_verifier_to_the_trainer(tmp_path, monkeypatch):
    from workbench.train_stage import train_entry
    from workbench.trainers.base import TrainResult

    recipe = parse_recipe({"run": {"name": "t"}, "model": "toy:arith",
                           "verify": {"verifier": "exact", "options": {"case_sensitive": True}},
                           "train": [{"name": "g", "algorithm": "grpo", "batch_size": 4, "num_generations": 4,
                                      "per_device_batch_size": 4}]})
    seen = {}

    class Capture:
        consumes = "prompts"

        def train(self, job, cfg):
            seen.update(verifier=job.verifier, options=job.verifier_options)
            return TrainResult(job.model_dir, 0, 0)

    monkeypatch.setattr(registry, "get_trainer", lambda name: Capture)
    (tmp_path / "build").mkdir()
    pl.DataFrame({"prompt_id": ["p"], "problem": ["1+1"], "answer": ["2"]}).write_parquet(
        tmp_path / "build" / "rl_prompts.parquet")
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text("{}")
    train_entry(recipe.train[0], recipe.template, str(tmp_path / "model"), tmp_path / "build", tmp_path / "out", 0,
                (), recipe.verify)
    assert seen == {"verifier": "exact", "options": {"case_sensitive": True}}
