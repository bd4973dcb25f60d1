"""The paper's own numbers (arXiv 2508.05629), printed beside ours when a recipe is the paper's setting.

Qwen2.5-Math-1.5B, Average@16 at temperature 1.0, in percent. Columns are our benchmark names.
Table 2: offline-RL setting (100k NuminaMath-CoT prompts, 4 samples each, verified positives / pairs).
Table 1: SFT vs DFT on NuminaMath-CoT demonstrations. Its base row is the same evaluation of the same
base model as Table 2's, repeated here so `base` gets a comparison in both settings.
"""

from __future__ import annotations

PAPER_BENCHMARKS = ["math500", "minerva_math", "olympiadbench", "aime24", "amc23"]
MODEL = "Qwen/Qwen2.5-Math-1.5B"


def _row(*values: float) -> dict[str, float]:
    """Five benchmark values then the paper's printed average."""
    return dict(zip(PAPER_BENCHMARKS + ["average"], values))


TABLE2 = {
    "base": _row(31.66, 8.51, 15.88, 4.16, 19.38, 15.92),
    "dpo": _row(46.89, 11.53, 22.86, 4.58, 30.16, 23.20),
    "rft": _row(48.23, 14.19, 22.29, 4.37, 30.78, 23.97),
    "ppo": _row(56.10, 15.41, 26.33, 7.50, 37.97, 28.66),
    "grpo": _row(62.86, 18.93, 28.62, 8.34, 41.25, 32.00),
    "dft": _row(64.71, 25.16, 30.93, 7.93, 48.44, 35.43),
}

TABLE1 = {
    "base": TABLE2["base"],
    "sft": _row(43.76, 13.04, 12.63, 1.87, 18.75, 18.01),
    "dft": _row(64.89, 20.94, 27.08, 6.87, 38.13, 31.58),
}

TABLES = {"table1": TABLE1, "table2": TABLE2}


def paper_row(table: str, method: str, algorithm: str | None = None) -> dict[str, float] | None:
    """The paper's row for one of our methods: matched by row name first, then by algorithm name."""
    rows = TABLES[table]
    for key in (method, algorithm):
        if key and key.lower() in rows:
            return rows[key.lower()]
    return None
