"""Sweeps: the grid, recipe checks, the validation split (disjoint from training and test problems), the
plan of trials and tune stages, and which values each train stage trains with."""

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from data_gen.prompts import load_prompts
from evaluators.evaluate import benchmark_refs, load_benchmarks
from workbench.pipeline import plan
from workbench.recipe import RecipeError, parse_recipe
from workbench.sweep import choose, edge, grid, stage_entry, validation_split


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
    # one-standard-error rule: within one SE of the best (0.30 - 0.03), the smallest learning rate
    lrs = [1e-4, 3e-4, 1e-3, 3e-3]
    assert choose([0.20, 0.28, 0.30, 0.25], [0.03] * 4, lrs) == 1
    assert choose([0.20, 0.26, 0.30, 0.25], [0.03] * 4, lrs) == 2  # 0.26 is more than one SE below
    assert choose([0.30, 0.30, 0.30, 0.30], [0.0] * 4, lrs[::-1]) == 3  # ties: the smallest value
    assert edge(lrs, 0) == "low" and edge(lrs, 3) == "high" and edge(lrs, 1) is None and edge([1e-3], 0) is None


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
    assert counts["left_out_training"] >= 300
    assert validation_split(r, training)[0].equals(split)  # deterministic
    # the split does not depend on evaluate.limit: every test problem is left out at any limit
    other = recipe(evaluate={"benchmarks": ["toy-id", "toy-long"], "limit": 20})
    assert validation_split(other, training)[0].equals(split)
    full = load_benchmarks(benchmark_refs(r.evaluate.benchmarks, None))
    assert not set(split["problem"]) & {p for df in full.values() for p in df["problem"]}


def test_validation_split_leaves_out_training_problems_by_text(tmp_path):
    """first_rows-style sources can repeat a problem under another prompt_id: the text decides."""
    rows = [{"problem": f"{i % 30}+1", "answer": str(i % 30 + 1)} for i in range(60)]  # rows 30-59 repeat 0-29
    rows += [{"problem": f"{i}*2", "answer": str(2 * i)} for i in range(20)]
    path = tmp_path / "prompts.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    prompts = {"source": "file", "path": str(path), "answer_field": "answer", "max_prompts": 30,
               "first_rows": True}
    r = recipe(prompts=prompts, tune={"validation_prompts": 20})
    training, _ = load_prompts(r.prompts, r.run.seed)
    split, _ = validation_split(r, training)
    assert not set(split["problem"]) & set(training["problem"])
    assert all(p.endswith("*2") for p in split["problem"])


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
    assert max(order.index(t) for t in trials) < order.index("tune/dft") < order.index("train/dft")
    assert names["tune/dft"].deps == ["validation", "build", *trials]
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


def _tune_fixture(tmp_path, monkeypatch, r, scores, ses):
    """A tune stage whose evaluations and extension trainings are faked: `scores[lr]` is the validation
    Average@k of a trial with that learning rate, with standard error about `ses`."""
    import numpy as np
    import polars as pl

    import evaluators.evaluate as ev
    import workbench.train_stage as ts
    from workbench.stage import StageContext

    tune = next(s for s in plan(r) if s.name == "tune/dft")
    (tmp_path / "validation").mkdir()
    n = 100
    pl.DataFrame({"problem_id": [f"v{i}" for i in range(n)], "problem": [f"{i}+1" for i in range(n)],
                  "answer": [str(i + 1) for i in range(n)]}).write_parquet(tmp_path / "validation" / "validation.parquet")
    ledger = {"samples": 400, "generated_tokens": 1, "trained_tokens": 1, "forwarded_tokens": 0, "parameters": 1,
              "flops": 8.0, "wall_s": 1.0, "gen_wall_s": 0.0}
    for j in range(len(tune.extra["trials"])):
        folder = tmp_path / "trial" / "dft" / str(j)
        folder.mkdir(parents=True)
        (folder / "manifest.json").write_text(json.dumps({"counts": {"ledger": ledger}}))
    (tmp_path / "build").mkdir()
    seen, trained = [], []

    def fake_evaluate(model, problems, cfg, template, out_dir, model_name, seed, verify=None):
        lr = float(Path(model).parent.name.split("=")[1]) if "=" in model else \
            tune.extra["trials"][int(model_name.split("/")[1])]["learning_rate"]
        seen.append((model_name, lr, cfg.k, cfg.limit, seed))
        mean, se = scores(lr), ses
        # 100 problems, scores 0/1 spread so that their mean and standard error are what we ask (about)
        half = se * np.sqrt(n - 1)
        values = np.clip(mean + half * np.where(np.arange(n) % 2 == 0, 1, -1), 0, 1)
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        pl.DataFrame({"problem_id": [f"v{i}" for i in range(n)], "correct": values}).write_parquet(
            out / "validation.parquet")
        return pl.DataFrame({"avg_at_k": [float(values.mean())]})

    def fake_train_now(recipe, entry, base_model, build_dir, out, seed):
        lr = entry.config.learning_rate
        trained.append(lr)
        (Path(out) / "model").mkdir(parents=True)
        (Path(out) / f"lr={lr}").mkdir()
        return {"ledger": {**ledger, "wall_s": 2.0}}

    monkeypatch.setattr(ev, "evaluate_problems", fake_evaluate)
    monkeypatch.setattr(ts, "train_now", fake_train_now)
    import workbench.sweep as sw

    monkeypatch.setattr(sw, "score_trial", _scorer(sw.score_trial))
    inputs = {d: tmp_path / d for d in tune.deps}
    (tmp_path / "out").mkdir()  # the pipeline hands a stage an existing folder
    ctx = StageContext(r, tmp_path / "out", inputs, None, dict(tune.extra))
    return ctx, seen, trained


def _scorer(real):
    """score_trial, with an extension trial's model folder renamed so the fake evaluator can read its lr."""
    def score(model, split, cfg, recipe, out, name, seed):
        marker = next(Path(model).parent.glob("lr=*"), None)
        return real(marker / "x" if marker else model, split, cfg, recipe, out, name, seed)
    return score


def lr_recipe(**tune):
    return recipe(train=[{"name": "dft", "algorithm": "dft", "sweep": {"learning_rate": [1e-4, 3e-4, 1e-3]}}],
                  tune={"validation_prompts": 100, **tune})


def test_tune_stage_scores_every_trial_with_its_standard_error_and_chooses_interior(tmp_path, monkeypatch):
    import polars as pl

    from workbench.sweep import tune_stage

    r = lr_recipe()
    curve = {1e-4: 0.20, 3e-4: 0.40, 1e-3: 0.30}
    ctx, seen, trained = _tune_fixture(tmp_path, monkeypatch, r, lambda lr: curve[lr], 0.02)
    counts = tune_stage(ctx)
    assert counts["trials"] == 3 and counts["extensions"] == 0 and counts["chosen"] == 1 and not trained
    assert all(s[2:] == (r.evaluate.k, None, 0) for s in seen)
    trials = pl.read_csv(tmp_path / "out" / "trials.csv")
    assert trials["validation_avg_at_k"].to_list() == pytest.approx([0.2, 0.4, 0.3], abs=1e-9)
    assert trials["validation_se"].to_list() == pytest.approx([0.02] * 3, rel=1e-6)
    assert trials["samples"].to_list() == [400] * 3  # each trial's ledger
    choice = json.loads((tmp_path / "out" / "chosen.json").read_text())
    assert choice["values"] == {"learning_rate": 3e-4} and choice["at_edge"] is None


def test_tune_stage_extends_an_edge_choice_until_interior(tmp_path, monkeypatch):
    import polars as pl

    from workbench.sweep import tune_stage

    r = lr_recipe(max_extensions=3, extend_factor=3.0)
    peak = 3e-5  # below the grid: the range must extend twice (3.33e-5 is within one SE, 1.11e-5 is not)
    ctx, _, trained = _tune_fixture(tmp_path, monkeypatch, r, lambda lr: 0.5 - 0.1 * abs(__import__("math").log10(
        lr / peak)), 0.01)
    counts = tune_stage(ctx)
    assert trained == pytest.approx([1e-4 / 3, 1e-4 / 9], rel=1e-3)  # the same factor, downwards
    assert counts["trials"] == 5 and counts["extensions"] == 2 and counts["at_edge"] == "None"
    trials = pl.read_csv(tmp_path / "out" / "trials.csv")
    assert trials["extension"].to_list() == [False, False, False, True, True]
    assert trials["wall_s"].to_list() == [1.0, 1.0, 1.0, 2.0, 2.0]  # every trial counted
    assert not (tmp_path / "out" / "trial-3" / "model").exists()  # scored, then dropped
    choice = json.loads((tmp_path / "out" / "chosen.json").read_text())
    assert choice["values"]["learning_rate"] == pytest.approx(3.333e-5)


def test_tune_stage_flags_a_choice_still_at_the_edge_after_the_cap(tmp_path, monkeypatch):
    from workbench.sweep import tune_stage, tuning_summary, tuning_table

    r = lr_recipe(max_extensions=1)
    ctx, _, trained = _tune_fixture(tmp_path, monkeypatch, r, lambda lr: 0.2 + 100 * lr, 0.005)  # rises with lr
    counts = tune_stage(ctx)
    assert trained == pytest.approx([3e-3]) and counts["at_edge"] == "high" and counts["trials"] == 4
    summary = tuning_summary(r, {"tune/dft": tmp_path / "out"})
    assert summary[0]["at_edge"] == "high" and summary[0]["trials"] == 4 and summary[0]["extensions"] == 1
    table = tuning_table(r, {"tune/dft": tmp_path / "out"})
    assert table["chosen"].to_list() == [False, False, False, True]
    assert table["at_edge"].to_list() == [None, None, None, "high"]  # the flag travels with tuning.csv
