"""Builders: the offline data sets of the paper's Table 2, made from verified samples.

- positives: every correct response (RFT/DFT train on these with an SFT-style loss); identical
  responses to one prompt are kept once when `dedup_positives`.
- pairs: DPO preference pairs (chosen = a correct response, rejected = an incorrect one, same prompt);
  `pair_strategy` and `max_pairs_per_prompt` choose them, `target_pairs` caps the total.
- truncated responses (finish_reason "length", cut at max_tokens) are never positives nor chosen, even when
  their last `\\boxed{}` matches: the SFT loop would append EOS and teach stopping mid-thought. They stay
  usable as rejected. `keep_truncated` turns this off.
- rl prompts: the same prompt set with gold answers, for the online baselines (PPO, GRPO).
- demonstrations: prompts that carry a gold worked solution (SFT on human demonstrations).
- stats: how the base model did (share correct, pass@1, pass@n) and what was built from it.
"""

from __future__ import annotations

import random

import polars as pl

from data_gen.config import BuildConfig

POSITIVE_SCHEMA = {"prompt_id": pl.String, "problem": pl.String, "response": pl.String}
PAIR_SCHEMA = {"prompt_id": pl.String, "problem": pl.String, "chosen": pl.String, "rejected": pl.String}


def _problems(prompts: pl.DataFrame) -> dict[str, str]:
    return dict(zip(prompts["prompt_id"].to_list(), prompts["problem"].to_list()))


def _groups(verified: pl.DataFrame) -> dict[str, list[dict]]:
    """Samples grouped by prompt, each group in sample_idx order; prompts in first-seen order."""
    rows = verified.sort(["prompt_id", "sample_idx"], maintain_order=True).to_dicts()
    groups: dict[str, list[dict]] = {}
    for row in rows:
        groups.setdefault(row["prompt_id"], []).append(row)
    return groups


def is_truncated(row: dict) -> bool:
    """A sample cut at max_tokens (finish_reason "length")."""
    return row.get("finish_reason") == "length"


def is_good(row: dict, cfg: BuildConfig) -> bool:
    """Usable as a positive / DPO chosen: correct, and not truncated unless cfg.keep_truncated."""
    return bool(row["correct"]) and (cfg.keep_truncated or not is_truncated(row))


def build_positives(verified: pl.DataFrame, prompts: pl.DataFrame, cfg: BuildConfig) -> pl.DataFrame:
    """Every correct, complete response with its problem (deduplicated per prompt when cfg.dedup_positives)."""
    problems = _problems(prompts)
    out = []
    for pid, rows in _groups(verified).items():
        seen = set()
        for row in rows:
            if not is_good(row, cfg):
                continue
            if cfg.dedup_positives and row["response"] in seen:
                continue
            seen.add(row["response"])
            out.append({"prompt_id": pid, "problem": problems[pid], "response": row["response"]})
    return pl.DataFrame(out, schema=POSITIVE_SCHEMA)


def pair_candidates(verified: pl.DataFrame,
                    cfg: BuildConfig) -> dict[str, tuple[list[str], list[str], str | None]]:
    """Per prompt: (distinct chosen candidates, distinct rejected candidates, reason it has no pair or None).

    Chosen: correct and complete (`is_good`); rejected: incorrect, or correct but truncated.
    """
    out = {}
    for pid, rows in _groups(verified).items():
        good, bad = [], []
        for row in rows:
            bucket = good if is_good(row, cfg) else bad
            if row["response"] not in bucket:
                bucket.append(row["response"])
        reason = None
        if not good and not bad:
            reason = "no_samples"
        elif not bad:
            reason = "all_correct"
        elif not good:
            reason = "all_wrong"
        out[pid] = (good, bad, reason)
    return out


def build_pairs(verified: pl.DataFrame, prompts: pl.DataFrame, cfg: BuildConfig, seed: int) -> pl.DataFrame:
    """DPO pairs (chosen correct, rejected incorrect, same prompt).

    `first` pairs the i-th correct with the i-th incorrect response in sample order; `random` draws
    distinct (correct, incorrect) combinations with the seed. At most `max_pairs_per_prompt` per prompt;
    with `target_pairs`, prompts are visited in a seeded order and building stops at the target.
    """
    problems = _problems(prompts)
    rng = random.Random(seed)
    cands = pair_candidates(verified, cfg)
    order = list(cands)
    if cfg.target_pairs is not None:
        rng.shuffle(order)
    out = []
    for pid in order:
        good, bad, reason = cands[pid]
        if reason:
            continue
        combos = [(g, b) for g in good for b in bad]
        if cfg.pair_strategy == "first":
            firsts = [(good[i], bad[i]) for i in range(min(len(good), len(bad)))]
            combos = firsts + [c for c in combos if c not in firsts]
        else:
            rng.shuffle(combos)
        for chosen, rejected in combos[:cfg.max_pairs_per_prompt]:
            if cfg.target_pairs is not None and len(out) >= cfg.target_pairs:
                break
            out.append({"prompt_id": pid, "problem": problems[pid], "chosen": chosen, "rejected": rejected})
    return pl.DataFrame(out, schema=PAIR_SCHEMA)


def build_rl_prompts(prompts: pl.DataFrame) -> pl.DataFrame:
    """The prompt set with gold answers, for PPO and GRPO (the verifier is their reward)."""
    return prompts.select("prompt_id", "problem", "answer")


def build_demonstrations(prompts: pl.DataFrame) -> pl.DataFrame:
    """Prompts that come with a gold worked solution: (prompt_id, problem, response = solution)."""
    if "solution" not in prompts.columns:
        return pl.DataFrame(schema=POSITIVE_SCHEMA)
    return (prompts.filter(pl.col("solution").is_not_null() & (pl.col("solution").str.strip_chars() != ""))
            .select("prompt_id", "problem", pl.col("solution").alias("response")))


def build_stats(verified: pl.DataFrame, positives: pl.DataFrame, pairs: pl.DataFrame,
                cfg: BuildConfig | None = None) -> dict:
    """Base-model and data-set statistics for stats.json.

    pass@1 = mean share of correct samples per prompt (= Average@n of the base model); pass@n = share of
    prompts with at least one correct sample among their n. `truncated` counts samples cut at max_tokens,
    `truncated_correct` those of them graded correct (excluded from positives and chosen unless
    `keep_truncated`, which `truncated_kept` records).
    """
    cfg = cfg or BuildConfig()
    n_samples = len(verified)
    per_prompt = verified.group_by("prompt_id").agg(pl.col("correct").mean().alias("acc"),
                                                    pl.col("correct").any().alias("any"), pl.len().alias("n"))
    n_prompts = len(per_prompt)
    paired = set(pairs["prompt_id"].to_list())
    no_pair: dict[str, int] = {"all_correct": 0, "all_wrong": 0, "target_reached": 0}
    for pid, (_, _, reason) in pair_candidates(verified, cfg).items():
        if pid in paired:
            continue
        key = reason or "target_reached"
        no_pair[key] = no_pair.get(key, 0) + 1
    status = {s: int((verified["status"] == s).sum()) for s in ("ok", "no_answer", "timeout", "error")} \
        if "status" in verified.columns else {}
    n = int(per_prompt["n"].max()) if n_prompts else 0
    cut = (verified["finish_reason"] == "length") if "finish_reason" in verified.columns \
        else pl.Series([False] * n_samples)
    return {
        "samples": n_samples,
        "prompts": n_prompts,
        "samples_per_prompt": n,
        "share_correct": float(verified["correct"].mean()) if n_samples else 0.0,
        "prompts_with_correct": int(per_prompt["any"].sum()) if n_prompts else 0,
        "pass@1": float(per_prompt["acc"].mean()) if n_prompts else 0.0,
        f"pass@{n}": float(per_prompt["any"].mean()) if n_prompts else 0.0,
        "truncated": int(cut.sum()),
        "truncated_correct": int((cut & verified["correct"]).sum()),
        "truncated_kept": cfg.keep_truncated,
        "status": status,
        "positives": len(positives),
        "pairs": len(pairs),
        "prompts_without_pairs": no_pair,
    }


def print_stats(stats: dict, title: str = "build stats") -> None:
    """Print stats.json as a rich table (nested dicts flattened as `a.b`)."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    table.add_column("statistic")
    table.add_column("value", justify="right")
    for key, value in stats.items():
        items = value.items() if isinstance(value, dict) else [(None, value)]
        for sub, val in items:
            name = f"{key}.{sub}" if sub else key
            table.add_row(name, f"{val:.4f}" if isinstance(val, float) else str(val))
    Console().print(table)
