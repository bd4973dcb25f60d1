"""Sweeps: the grid, recipe checks, the validation split (disjoint from training and test problems), the
plan of trials and tune stages, and which values each train stage trains with."""

import json
from types import SimpleNamespace

import pytest

from data_gen.prompts import load_prompts
from evaluators.evaluate import benchmark_refs, load_benchmarks
from workbench.pipeline import plan
from workbench.recipe import RecipeError, parse_recipe
from workbench.sweep import choose, grid, stage_entry, validation_split


def recipe(**extra):
    data = {"run": {"name": "t"}, "model": "toy:arith",
            "prompts": {"source": "toy", "max_prompts": 300},
            "evaluate": {"benchmarks": ["toy-id", "toy-long"], "limit": 200},
            "tune": {"validation_prompts": 100},
            "train": [{"name": "dft", "algorithm": "dft", "learning_rate": 1e-3,
                       "sweep": {"learning_rate": [1e-4, 1e-3], "num_epochs": [1, 2]}},
                      {"name": "rft", "algorithm": "rft"}]}
    data.update(extra)
    return parse_recipe(data, "t.yaml")


def test_grid_and_choice():
    assert grid({"a": [1, 2], "b": ["x", "y"]}) == [{"a": 1, "b": "x"}, {"a": 1, "b": "y"},
                                                     {"a": 2, "b": "x"}, {"a": 2, "b": "y"}]
    assert choose([0.1, 0.3, 0.3, 0.2]) == 1  # a tie goes to the earlier trial


def test_bad_sweeps_fail_with_one_line():
    base = {"run": {"name": "t"}, "model": "toy:arith"}
    for sweep, match in [({"learnin_rate": [1e-3]}, r"train\[0\].sweep.learnin_rate: not a config field"),
                         ({"name": ["a"]}, r"sweep.name: not a config field"),
                         ({"learning_rate": []}, r"sweep.learning_rate: expected a non-empty list"),
                         ({"learning_rate": ["fast"]}, r"sweep.learning_rate: .*'fast'")]:
        with pytest.raises(RecipeError, match=match) as err:
            parse_recipe({**base, "train": [{"name": "d", "algorithm": "dft", "sweep": sweep}]}, "t.yaml")
        assert "\n" not in str(err.value)


def test_validation_split_is_disjoint_from_training_and_test_problems():
    r = recipe()
    training, _ = load_prompts(r.prompts, r.run.seed)
    split, counts = validation_split(r, training)
    assert split.columns == ["problem_id", "problem", "answer"] and split.height == 100
    assert split["problem_id"].n_unique() == 100
    assert not set(split["problem_id"]) & set(training["prompt_id"])
    assert not set(split["problem"]) & set(training["problem"])
    tests = load_benchmarks(benchmark_refs(r.evaluate.benchmarks, r.evaluate.limit))
    assert not set(split["problem"]) & {p for df in tests.values() for p in df["problem"]}
    assert counts["left_out_training"] == 300
    assert validation_split(r, training)[0].equals(split)  # deterministic


def test_validation_split_of_a_file_source_drops_test_problems(tmp_path):
    toy_id = load_benchmarks(benchmark_refs(["toy-id"], 200))["toy-id"]
    rows = [{"problem": f"{i}+{i}", "answer": str(2 * i)} for i in range(40)]
    rows += [{"problem": p, "answer": a} for p, a in zip(toy_id["problem"][:10], toy_id["answer"][:10])]
    path = tmp_path / "prompts.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    prompts = {"source": "file", "path": str(path), "answer_field": "answer", "max_prompts": 20}
    r = recipe(prompts=prompts, tune={"validation_prompts": 20})
    training, _ = load_prompts(r.prompts, r.run.seed)
    split, counts = validation_split(r, training)
    in_training = len(set(training["problem"]) & set(toy_id["problem"]))
    assert split.height == 20 and counts["left_out_test"] == 10 - in_training
    assert not set(split["problem"]) & (set(training["problem"]) | set(toy_id["problem"]))
    available = 30 - counts["left_out_test"]  # 50 rows - 20 training - the test problems among the rest
    with pytest.raises(ValueError, match=f"tune.validation_prompts: the prompt source has only {available} "):
        validation_split(recipe(prompts=prompts, tune={"validation_prompts": available + 1}), training)


def test_plan_runs_every_trial_then_tune_then_training():
    names = {s.name: s for s in plan(recipe(run={"name": "t", "seeds": [0, 1]}))}
    order = list(names)
    trials = [f"trial/dft/{j}" for j in range(4)]
    assert order.index("validation") < order.index(trials[0])
    assert max(order.index(t) for t in trials) < order.index("tune/dft") < order.index("train/dft@s0")
    assert names["tune/dft"].deps == ["validation", *trials]
    assert names["train/dft@s1"].deps == ["build", "tune/dft"] and names["train/rft@s1"].deps == ["build"]
    assert names["trial/dft/3"].extra["values"] == {"learning_rate": 1e-3, "num_epochs": 2}
    assert all(names[t].extra["seed"] == 0 for t in trials)  # trials train with the first seed
    assert "tune/dft" in names["report"].deps and "trial/rft/0" not in names


def test_train_stages_get_the_trial_or_the_chosen_values(tmp_path):
    r = recipe()
    stages = {s.name: s for s in plan(r)}
    (tmp_path / "tune" / "dft").mkdir(parents=True)
    (tmp_path / "tune" / "dft" / "chosen.json").write_text(json.dumps({"values": {"learning_rate": 1e-4,
                                                                                   "num_epochs": 2}}))
    pipe = SimpleNamespace(recipe=r, rundir=SimpleNamespace(path=lambda name: tmp_path / name))
    trial = stage_entry(pipe, stages["trial/dft/2"]).config
    assert (trial.learning_rate, trial.num_epochs) == (1e-3, 1)
    chosen = stage_entry(pipe, stages["train/dft"]).config
    assert (chosen.learning_rate, chosen.num_epochs) == (1e-4, 2)
    assert r.train[0].config.learning_rate == 1e-3  # the recipe's entry is left alone
    assert stage_entry(pipe, stages["train/rft"]) is r.train[1]


def test_tune_stage_scores_every_trial_and_keeps_the_best(tmp_path, monkeypatch):
    import polars as pl

    import evaluators.evaluate as ev
    from workbench.stage import StageContext
    from workbench.sweep import tune_stage

    r = recipe()
    tune = next(s for s in plan(r) if s.name == "tune/dft")
    (tmp_path / "validation").mkdir()
    pl.DataFrame({"problem_id": ["a"], "problem": ["1+1"], "answer": ["2"]}).write_parquet(
        tmp_path / "validation" / "validation.parquet")
    scores = {"0": 0.2, "1": 0.5, "2": 0.5, "3": 0.1}  # a tie between trials 1 and 2 goes to 1
    seen = []

    def fake_evaluate(model, problems, cfg, template, out_dir, model_name, seed, verify=None):
        seen.append((model, list(problems), cfg.k, cfg.limit, seed))
        return pl.DataFrame({"avg_at_k": [scores[model_name.split("/")[1]]]})

    monkeypatch.setattr(ev, "evaluate_problems", fake_evaluate)
    inputs = {d: tmp_path / d for d in tune.deps}
    (tmp_path / "out").mkdir()  # the pipeline hands a stage an existing folder
    counts = tune_stage(StageContext(r, tmp_path / "out", inputs, None, dict(tune.extra)))
    assert counts == {"trials": 4, "chosen": 1, "validation_avg_at_k": 50.0}
    assert [s[0] for s in seen] == [str(tmp_path / f"trial/dft/{j}" / "model") for j in range(4)]
    assert all(s[1:] == (["validation"], r.evaluate.k, None, 0) for s in seen)
    choice = json.loads((tmp_path / "out" / "chosen.json").read_text())
    assert choice["values"] == {"learning_rate": 1e-4, "num_epochs": 2} and choice["trials"] == 4
    assert pl.read_csv(tmp_path / "out" / "trials.csv")["validation_avg_at_k"].to_list() == [0.2, 0.5, 0.5, 0.1]
