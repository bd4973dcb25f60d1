"""docs/paper-settings.md against the paper recipes: every row naming a recipe key holds the value the recipe
(or, for a train entry, the algorithm's validated config) really has; SFT/RFT differ from DFT in the loss only."""

import re
from functools import cache
from pathlib import Path

import pytest
import yaml

from workbench.recipe import load_recipe

ROOT = Path(__file__).resolve().parents[1]
RECIPES = {"Table 1": "recipes/table1-qwen2.5-math-1.5b.yaml", "Table 2": "recipes/table2-qwen2.5-math-1.5b.yaml"}


def settings_rows() -> list[tuple[str, str, str]]:
    """(recipe label, key, YAML value) of every table row whose key column is a backticked recipe key."""
    lines = (ROOT / "docs" / "paper-settings.md").read_text().splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("| setting | recipe key |"))
    labels = [c.strip() for c in lines[header].strip("|").split("|")]
    rows = []
    for line in lines[header + 2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip().strip("|"))]
        key = cells[1].strip("`")
        for label in RECIPES:
            value = cells[labels.index(label)]
            if value != "—":
                rows.append((label, key, value.strip("`")))
    return rows


@cache
def recipe(label: str):
    return load_recipe(ROOT / RECIPES[label])


def recipe_value(label: str, key: str):
    parts = key.split(".")
    if parts[0] == "train":
        entry = next((e for e in recipe(label).train if e.name == parts[1]), None)
        assert entry is not None, f"{label}: no train entry {parts[1]}"
        return getattr(entry.config, parts[2]) if hasattr(entry.config, parts[2]) else getattr(entry, parts[2])
    raw = yaml.safe_load((ROOT / RECIPES[label]).read_text())
    for part in parts:
        if not isinstance(raw, dict) or part not in raw:
            break
        raw = raw[part]
    else:
        return raw
    value = recipe(label)
    for part in parts:
        value = getattr(value, part)
    return value


ROWS = settings_rows()


def test_the_table_covers_both_recipes():
    assert len(ROWS) > 80 and {label for label, _, _ in ROWS} == set(RECIPES)


@pytest.mark.parametrize("label,key,value", ROWS, ids=[f"{label}:{key}" for label, key, _ in ROWS])
def test_documented_value_is_the_recipe_value(label, key, value):
    assert recipe_value(label, key) == yaml.safe_load(value)


@pytest.mark.parametrize("label,other", [("Table 1", "sft"), ("Table 2", "rft")])
def test_only_the_loss_differs_from_dft(label, other):
    entries = {e.name: e for e in recipe(label).train}
    dft, sft = entries["dft"].config.model_dump(), entries[other].config.model_dump()
    shared = set(dft) & set(sft)
    assert {k: dft[k] for k in shared} == {k: sft[k] for k in shared}
    assert entries["dft"].num_workers == entries[other].num_workers
