"""Token losses of the SFT family: cross-entropy (SFT, RFT), Dynamic Fine-Tuning (DFT) and its relatives.

The paper's DFT (Eq. 9) rescales each response token's cross-entropy by the model's own probability of
that token, with the weight cut out of the graph (`sg`, stop-gradient):

    L_DFT = E_(x, y) [ sum over the response tokens t of y of  -sg(p_t) * log p_t ]

Eq. 9 sums over each sequence's tokens. Implementations average instead: here over every response token of
the optimizer batch (below, as TRL's `SFTTrainer`); the authors' `fsdp_dft_trainer.py` over the valid tokens of
each micro-batch, then over micro-batches (and workers). The three differ by a per-token weighting when
response lengths vary, not in the token's weight sg(p_t).

With the weight detached, its gradient is `-sg(p_t) * grad log p_t = -grad p_t` (Appendix A.4): DFT
ascends the token probability itself rather than its log, so confident tokens are not pushed further and
unlikely tokens no longer dominate the update.

Every kind goes through `weighted_nll`, one code path: per-token log-probabilities (from full logits with
`F.cross_entropy(reduction="none")` in `token_loss`, adding no vocab-sized tensor beyond what cross-entropy
itself needs, or from TRL's tiled LM head on GPUs), then a per-token loss from the registry `LOSS_KINDS`.
Prompt (and padding) tokens carry label -100 and are ignored. The loss is a sum over the micro-batch
divided by `num_tokens`, the response tokens of the whole optimizer batch, so gradient accumulation gives
the same token mean as one big batch (as TRL's `SFTTrainer` normalises). Under bf16 autocast the LM head's
matmul runs in bf16; its logits are upcast to float32 (`_full`) before the softmax, so the log-probabilities
are float32 functions of bf16 logits, not float32 logits.

The kinds (each a plugin of one small file under `workbench/trainers/`, whose docstring gives the source):
- `ce`: -log p_t (SFT, RFT);
- `dft`: -sg(w_t) log p_t with w_t = sg(p_t), optionally mixed (`alpha`: alpha * p + 1 - alpha) and floored
  (`p_floor`);
- `pk`: (1 - p_t^k) / k, the "-p^k" family of arXiv 2510.00526 (gradient -p^k grad log p: k=1 is DFT's
  gradient, k -> 0 is cross-entropy);
- `profit`: -1[p_t >= tau] log p_t, ProFit's probability cutoff (arXiv 2601.09195);
- `iwsft`: -sg(w(y)) log p_t with a per-sequence importance weight against the frozen base model
  (arXiv 2507.12856; needs the base model's log-probabilities, `LossContext.ref_logp`);
- `psft`: -min(r_t, clip(r_t, 1 - eps_low, 1 + eps_high)), r_t = p_t / p_old_t, Proximal SFT (arXiv 2508.17784;
  needs the previous policy's log-probabilities, `LossContext.old_logp`);
- `anneal`: DFT's weight mixed towards cross-entropy as training progresses (`LossContext.progress`).

`kl_weight` (any kind, full logits only) adds the ASFT anchor (Zhu et al. 2025, arXiv 2509.23753):
`kl_weight * KL(p_base || p_model)` per response token (`kl_direction: forward`, the default), as the authors'
code computes it (zhuchichi56/ASFT `train_v2.py`, mode `asft`: `F.kl_div(log_softmax(model), softmax(ref))`,
added to each token's DFT loss, weight 0.1; LLaMA-Factory's `use_asft_loss` likewise).
`kl_direction: reverse` gives KL(p_model || p_base), the mode-seeking direction this project used before; the
two agree to second order near the base model and differ once the model moves. The KL is summed over the
response tokens and divided by the same `num_tokens` as the token loss.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100


@dataclass
class LossContext:
    """What some kinds need besides the model's log-probabilities (all [batch, seq] like `logp`)."""

    progress: float = 0.0  # training progress in [0, 1]: (step - 1) / (total_steps - 1)
    ref_logp: torch.Tensor | None = None  # the frozen base model's log p_t (iw-SFT)
    old_logp: torch.Tensor | None = None  # the previous policy's log p_t (Proximal SFT)


@dataclass(frozen=True)
class LossKind:
    """A registered per-token loss: `fn(logp, mask, ctx, **options) -> [batch, seq] losses`."""

    fn: Callable
    options: dict  # option name -> default; trainers' configs carry fields of these names
    needs: str = ""  # "ref": the frozen base model's log-probs; "old": the previous policy's


def _full(x: torch.Tensor) -> torch.Tensor:
    """Half-precision logits are upcast to float32 for the softmax; float32/64 pass through uncopied."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def shift_labels(labels: torch.Tensor) -> torch.Tensor:
    """Labels for next-token prediction: position i predicts token i+1; the last position predicts nothing.

    Shifting the labels (not the logits) avoids copying the vocab-sized logits tensor.
    """
    return F.pad(labels[:, 1:], (0, 1), value=IGNORE_INDEX)


def token_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """log p_t of each label token, [batch, seq]; 0 where the (already shifted) label is -100."""
    vocab = logits.size(-1)
    ce = F.cross_entropy(_full(logits).reshape(-1, vocab), labels.reshape(-1), ignore_index=IGNORE_INDEX,
                         reduction="none")
    return -ce.view(labels.shape)


def dft_weight(logp: torch.Tensor, alpha: float = 1.0, p_floor: float = 0.0) -> torch.Tensor:
    """The detached per-token weight sg(p_t), optionally mixed (`alpha`) and floored (`p_floor`)."""
    p = logp.detach().exp()
    if p_floor > 0:
        p = p.clamp(min=p_floor)
    if alpha != 1.0:
        p = alpha * p + (1.0 - alpha)
    return p


def token_kl(logits: torch.Tensor, ref_logits: torch.Tensor, mask: torch.Tensor,
             direction: str = "forward") -> torch.Tensor:
    """KL over the vocabulary at each position, [batch, seq], zero where mask is False: `forward` is
    KL(p_ref || p_model) (ASFT's, `F.kl_div(log p_model, p_ref)`), `reverse` is KL(p_model || p_ref)."""
    logq = F.log_softmax(_full(logits), dim=-1)
    logr = F.log_softmax(_full(ref_logits), dim=-1)
    if direction == "forward":
        kl = (logr.exp() * (logr - logq)).sum(-1)
    elif direction == "reverse":
        kl = (logq.exp() * (logq - logr)).sum(-1)
    else:
        raise ValueError(f"token_loss: kl_direction must be 'forward' or 'reverse', got {direction!r}")
    return kl * mask


# --- the per-token losses ---------------------------------------------------------------------------


def _ce(logp, mask, ctx):
    return -logp


def _dft(logp, mask, ctx, alpha=1.0, p_floor=0.0):
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"token_loss: alpha must be in [0, 1], got {alpha}")
    return -dft_weight(logp, alpha, p_floor) * logp


def _pk(logp, mask, ctx, k=1.0):
    """(1 - p^k) / k; its k -> 0 limit -log p is taken exactly below k = 1e-6."""
    if k < 0:
        raise ValueError(f"token_loss: k must be >= 0, got {k}")
    return -logp if k < 1e-6 else (1.0 - torch.exp(k * logp)) / k


def _profit(logp, mask, ctx, tau=0.1):
    keep = logp.detach().exp() >= tau
    return -logp * keep


def _iwsft(logp, mask, ctx, iw_level="sequence", iw_temperature=1.0, iw_max=16.0, iw_clip=0.8):
    if ctx.ref_logp is None:
        raise ValueError("token_loss: kind 'iwsft' needs LossContext.ref_logp (the base model's log-probs)")
    diff = (logp.detach() - ctx.ref_logp) * mask
    if iw_level == "sequence":  # exp(temperature x mean over the sequence of log p_theta - log p_ref)
        mean = diff.sum(-1, keepdim=True) / mask.sum(-1, keepdim=True).clamp(min=1)
        weight = torch.exp(iw_temperature * mean).clamp(0.0, iw_max)
    elif iw_level == "token":  # per-token ratio, clipped to [1 - iw_clip, 1 + iw_clip]
        weight = torch.exp(diff).clamp(1.0 - iw_clip, 1.0 + iw_clip)
    else:
        raise ValueError(f"token_loss: iw_level must be 'sequence' or 'token', got {iw_level!r}")
    return -weight * logp


def _psft(logp, mask, ctx, clip_low=0.2, clip_high=0.28):
    if ctx.old_logp is None:
        raise ValueError("token_loss: kind 'psft' needs LossContext.old_logp (the previous policy's log-probs)")
    ratio = torch.exp(logp - ctx.old_logp)
    return -torch.min(ratio, ratio.clamp(1.0 - clip_low, 1.0 + clip_high))


def anneal_alpha(progress: float, start: float = 0.0, end: float = 1.0, shape: str = "linear") -> float:
    """DFT's `alpha` at `progress`: 1 (DFT) until `start`, 0 (cross-entropy) from `end`, linear or cosine
    in between."""
    if not 0.0 <= start < end <= 1.0:
        raise ValueError(f"token_loss: need 0 <= anneal_start < anneal_end <= 1, got {start}, {end}")
    x = min(1.0, max(0.0, (progress - start) / (end - start)))
    if shape == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * x))
    if shape == "linear":
        return 1.0 - x
    raise ValueError(f"token_loss: anneal_shape must be 'linear' or 'cosine', got {shape!r}")


def _anneal(logp, mask, ctx, anneal_start=0.0, anneal_end=1.0, anneal_shape="linear"):
    return -dft_weight(logp, anneal_alpha(ctx.progress, anneal_start, anneal_end, anneal_shape)) * logp


LOSS_KINDS: dict[str, LossKind] = {
    "ce": LossKind(_ce, {}),
    "dft": LossKind(_dft, {"alpha": 1.0, "p_floor": 0.0}),
    "pk": LossKind(_pk, {"k": 1.0}),
    "profit": LossKind(_profit, {"tau": 0.1}),
    "iwsft": LossKind(_iwsft, {"iw_level": "sequence", "iw_temperature": 1.0, "iw_max": 16.0, "iw_clip": 0.8},
                      needs="ref"),
    "psft": LossKind(_psft, {"clip_low": 0.2, "clip_high": 0.28}, needs="old"),
    "anneal": LossKind(_anneal, {"anneal_start": 0.0, "anneal_end": 1.0, "anneal_shape": "linear"}),
}


def loss_kind(kind: str) -> LossKind:
    if kind not in LOSS_KINDS:
        raise ValueError(f"token_loss: kind must be one of {', '.join(LOSS_KINDS)}, got {kind!r}")
    return LOSS_KINDS[kind]


def loss_options(cfg, kind: str) -> dict:
    """The options of `kind` (plus `kl_weight`, `kl_direction`) that the trainer config `cfg` carries, by name."""
    names = [*loss_kind(kind).options, "kl_weight", "kl_direction"]
    return {name: getattr(cfg, name) for name in names if hasattr(cfg, name)}


def weighted_nll(
    logp: torch.Tensor,
    mask: torch.Tensor,
    num_tokens: int | torch.Tensor | None = None,
    *,
    kind: str = "dft",
    ctx: LossContext | None = None,
    **options,
) -> tuple[torch.Tensor, dict]:
    """The loss from per-token log-probabilities `logp` (0 where `mask` is False): the sum over response
    tokens of the per-token loss of `kind` (see `LOSS_KINDS`), divided by `num_tokens`.

    This is the one place the SFT-family methods differ. `logp` may come from full logits (`token_logprobs`)
    or from TRL's tiled LM head, which never builds the [batch, seq, vocab] logits. `options` are the kind's
    own (e.g. alpha, p_floor for "dft"; k for "pk"); unknown ones are an error.
    Returns (loss, stats) with detached sums over response tokens: "ce" (cross-entropy), "dft" (the DFT loss
    -p log p, logged beside any kind), "p" (p_t), "kept" (tokens with a nonzero loss weight), "tokens".
    """
    spec = loss_kind(kind)
    unknown = set(options) - set(spec.options)
    if unknown:
        raise ValueError(f"token_loss: kind {kind!r} takes no option(s) {', '.join(sorted(unknown))}")
    ctx = ctx or LossContext()
    # ignored positions may hold anything (a fused LM head's kernel need not write 0 there; -inf or NaN
    # times a 0 mask is NaN): zero them by selection, which also keeps their gradient at exactly 0
    logp = logp.masked_fill(~mask.bool(), 0.0)
    per_token = spec.fn(logp, mask, ctx, **options) * mask
    count = mask.sum()
    denom = torch.as_tensor(count if num_tokens is None else num_tokens).clamp(min=1)
    with torch.no_grad():
        lp = logp.detach() * mask
        p = lp.exp() * mask
        stats = {
            "ce": (-lp).sum().item(),
            "dft": (-p * lp).sum().item(),
            "p": p.sum().item(),
            "kept": int(((per_token.detach() != 0) & mask.bool()).sum()),
            "tokens": int(count),
        }
    return per_token.sum() / denom, stats


def token_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    num_tokens: int | torch.Tensor | None = None,
    *,
    kind: str = "dft",
    kl_weight: float = 0.0,
    kl_direction: str = "forward",
    ref_logits: torch.Tensor | None = None,
    ctx: LossContext | None = None,
    **options,
) -> tuple[torch.Tensor, dict]:
    """The SFT-family loss of one micro-batch from full logits, and a few detached statistics.

    logits: [batch, seq, vocab] from the model; labels: [batch, seq] input ids with prompt and padding
    set to -100 (unshifted, as for `AutoModelForCausalLM`). kind: a key of `LOSS_KINDS`.
    num_tokens: response tokens to divide by (default: those in this micro-batch).
    kl_weight, kl_direction: the ASFT anchor, kl_weight x KL (see `token_kl`) per response token.
    ref_logits: the frozen base model's logits, for the ASFT KL term and for kinds that need the base
    model's log-probabilities (iw-SFT); ctx: progress and the previous policy's log-probs (see LossContext).
    Returns (loss, stats) with the sums of `weighted_nll` plus "kl".
    """
    labels = shift_labels(labels)
    mask = labels != IGNORE_INDEX
    logp = token_logprobs(logits, labels)  # 0 on ignored positions
    ctx = ctx or LossContext()
    if loss_kind(kind).needs == "ref" and ctx.ref_logp is None:
        if ref_logits is None:
            raise ValueError(f"token_loss: kind {kind!r} needs ref_logits (the base model's logits)")
        with torch.no_grad():
            ctx.ref_logp = token_logprobs(ref_logits, labels)
    loss, stats = weighted_nll(logp, mask, num_tokens, kind=kind, ctx=ctx, **options)
    stats["kl"] = 0.0
    if kl_weight > 0:
        if ref_logits is None:
            raise ValueError("token_loss: kl_weight > 0 needs ref_logits (the base model's logits)")
        kl = token_kl(logits, ref_logits, mask, kl_direction)
        denom = torch.as_tensor(stats["tokens"] if num_tokens is None else num_tokens).clamp(min=1)
        loss = loss + kl_weight * kl.sum() / denom
        stats["kl"] = kl.detach().sum().item()
    return loss, stats
