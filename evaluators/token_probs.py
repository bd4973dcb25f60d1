"""Token-probability shift (the paper's Figure 2): how training moves the model's probability p_t of the
training data's own tokens.

For the base model and every trained model, the probability each assigns to every response token of one
fixed slice of the training data (the first `rows` rows of positives or demonstrations, the same slice for
every model, encoded with the run's one template exactly as the SFT-family trainers encode it). The paper's
observation: SFT pushes the distribution of p_t up uniformly (towards 1), DFT makes it bimodal, raising some
tokens and leaving (or lowering) others.

Outputs (in the report folder):

    token_probs.csv   model, bin_low, bin_high, count, fraction      histogram of p_t, `bins` equal bins on [0, 1]
    token_probs.md    per model: tokens, mean p, median p, share of p < 0.1, share of p > 0.9
    token_probs.png   one histogram line per model (log-scale fractions)
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import polars as pl
import torch

from workbench.template import TemplateConfig

HIST_SCHEMA = {"model": pl.Utf8, "bin_low": pl.Float64, "bin_high": pl.Float64, "count": pl.Int64,
               "fraction": pl.Float64}


@torch.no_grad()
def target_token_probs(model_path: str | Path, data: pl.DataFrame, template: TemplateConfig,
                       max_length: int = 2048, batch_size: int = 16) -> np.ndarray:
    """p_t of every response token of `data` (problem, response rows) under the model at `model_path`."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from workbench.trainers.common import collate, encode_rows
    from workbench.trainers.losses import IGNORE_INDEX, shift_labels, token_logprobs

    device = "cuda" if torch.cuda.is_available() else "cpu"
    tokenizer = AutoTokenizer.from_pretrained(model_path, local_files_only=True)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(model_path, local_files_only=True, dtype=torch.float32)
    model.to(device).eval()
    examples, _ = encode_rows(data, tokenizer, SimpleNamespace(template=template), max_length,
                              f"token_probs ({Path(model_path).name})")
    probs = []
    for start in range(0, len(examples), batch_size):
        batch = collate(examples[start:start + batch_size], tokenizer.pad_token_id, device)
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        labels = shift_labels(batch["labels"])
        logp = token_logprobs(logits, labels)
        probs.append(logp[labels != IGNORE_INDEX].exp().cpu().numpy())
    return np.concatenate(probs)


def histogram(name: str, p: np.ndarray, bins: int = 20) -> pl.DataFrame:
    """Counts of p in `bins` equal bins on [0, 1] (the last bin includes 1)."""
    counts, edges = np.histogram(np.clip(p, 0.0, 1.0), bins=bins, range=(0.0, 1.0))
    total = max(1, int(counts.sum()))
    return pl.DataFrame({"model": [name] * bins, "bin_low": edges[:-1], "bin_high": edges[1:],
                         "count": counts.astype(np.int64), "fraction": counts / total}, schema=HIST_SCHEMA)


def summary_row(name: str, p: np.ndarray) -> dict:
    return {"model": name, "tokens": int(p.size), "mean_p": float(p.mean()), "median_p": float(np.median(p)),
            "share_below_0.1": float((p < 0.1).mean()), "share_above_0.9": float((p > 0.9).mean())}


def render_summary(rows: list[dict], data_name: str, n_rows: int) -> str:
    lines = [f"**Target-token probabilities** on the first {n_rows} rows of `{data_name}` (Figure 2)", "",
             "| model | tokens | mean p | median p | p < 0.1 | p > 0.9 |", "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['tokens']} | {r['mean_p']:.3f} | {r['median_p']:.3f} | "
                     f"{100 * r['share_below_0.1']:.1f}% | {100 * r['share_above_0.9']:.1f}% |")
    return "\n".join(lines)


def plot(hist: pl.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for name in hist["model"].unique(maintain_order=True):
        h = hist.filter(pl.col("model") == name)
        centers = (h["bin_low"] + h["bin_high"]).to_numpy() / 2
        ax.plot(centers, np.maximum(h["fraction"].to_numpy(), 1e-5), marker="o", markersize=3, label=name)
    ax.set_yscale("log")
    ax.set_xlabel("probability of the training token, p_t")
    ax.set_ylabel("share of response tokens")
    ax.set_title("Target-token probabilities on the training data")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_token_probs(out_dir: Path, models: dict[str, str | Path], data: pl.DataFrame, template: TemplateConfig,
                      rows: int, data_name: str = "positives", bins: int = 20, max_length: int = 2048,
                      plot_png: bool = True) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Score the first `rows` rows of `data` with every model ({name: folder}); write the CSV, table and
    plot into `out_dir`; return the histogram and the per-model summary (mean p, shares)."""
    if data.height == 0:
        raise ValueError(f"token_probs: the {data_name} data set is empty")
    data = data.head(rows)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    hists, summaries = [], []
    for name, path in models.items():
        p = target_token_probs(path, data, template, max_length)
        hists.append(histogram(name, p, bins))
        summaries.append(summary_row(name, p))
    hist = pl.concat(hists)
    hist.write_csv(out_dir / "token_probs.csv")
    (out_dir / "token_probs.md").write_text(render_summary(summaries, data_name, data.height) + "\n")
    if plot_png:
        plot(hist, out_dir / "token_probs.png")
    return hist, pl.DataFrame(summaries)
