"""Token losses of the SFT family: cross-entropy (SFT, RFT) and Dynamic Fine-Tuning (DFT).

The paper's DFT (Eq. 9) rescales each response token's cross-entropy by the model's own probability of
that token, with the weight cut out of the graph (`sg`, stop-gradient):

    L_DFT = mean over response tokens t of  -sg(p_t) * log p_t

With the weight detached, its gradient is `-sg(p_t) * grad log p_t = -grad p_t` (Appendix A.4): DFT
ascends the token probability itself rather than its log, so confident tokens are not pushed further and
unlikely tokens no longer dominate the update.

Both losses go through `weighted_nll`, one code path: per-token log-probabilities (from full logits with
`F.cross_entropy(reduction="none")` in `token_loss`, adding no vocab-sized tensor beyond what cross-entropy
itself needs, or from TRL's tiled LM head on GPUs), then a per-token weight. Prompt (and padding) tokens carry label -100 and are ignored. The loss is a sum
over the micro-batch divided by `num_tokens`, the response tokens of the whole optimizer batch, so gradient
accumulation gives the same token mean as one big batch (as TRL's `SFTTrainer` normalises).

Options beyond the paper, all off by default:
- `alpha`: weight `alpha * p + (1 - alpha)` (1 = DFT, 0 = cross-entropy), interpolating the two;
- `p_floor`: the weight is `max(p, p_floor)`, so that very unlikely tokens still get some gradient;
- `kl_weight`: the ASFT variant (Zhu et al. 2025, arXiv 2509.23753): add `kl_weight * KL(p_model || p_base)`
  per response token, anchoring the model to the frozen base model (needs the base model's logits).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100


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


def token_kl(logits: torch.Tensor, ref_logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """KL(p_model || p_ref) over the vocabulary at each position, [batch, seq], zero where mask is False."""
    logq = F.log_softmax(_full(logits), dim=-1)
    logr = F.log_softmax(_full(ref_logits), dim=-1)
    kl = (logq.exp() * (logq - logr)).sum(-1)
    return kl * mask


def check_options(kind: str, alpha: float) -> None:
    if kind not in ("ce", "dft"):
        raise ValueError(f"token_loss: kind must be 'ce' or 'dft', got {kind!r}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"token_loss: alpha must be in [0, 1], got {alpha}")


def weighted_nll(
    logp: torch.Tensor,
    mask: torch.Tensor,
    num_tokens: int | torch.Tensor | None = None,
    *,
    kind: str = "dft",
    alpha: float = 1.0,
    p_floor: float = 0.0,
) -> tuple[torch.Tensor, dict]:
    """The loss from per-token log-probabilities `logp` (0 where `mask` is False): sum of
    -w_t * log p_t / num_tokens, with w_t = 1 (kind "ce") or the detached DFT weight (kind "dft").

    This is the one place SFT, RFT and DFT differ. `logp` may come from full logits (`token_logprobs`) or from
    TRL's tiled LM head, which never builds the [batch, seq, vocab] logits.
    Returns (loss, {"ce": summed cross-entropy, "p": summed p_t, "tokens": count}).
    """
    check_options(kind, alpha)
    per_token = -logp if kind == "ce" else -dft_weight(logp, alpha, p_floor) * logp
    count = mask.sum()
    denom = torch.as_tensor(count if num_tokens is None else num_tokens).clamp(min=1)
    stats = {
        "ce": (-logp.detach()).sum().item(),
        "p": (logp.detach().exp() * mask).sum().item(),
        "tokens": int(count),
    }
    return per_token.sum() / denom, stats


def token_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    num_tokens: int | torch.Tensor | None = None,
    *,
    kind: str = "dft",
    alpha: float = 1.0,
    p_floor: float = 0.0,
    kl_weight: float = 0.0,
    ref_logits: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict]:
    """The SFT-family loss of one micro-batch from full logits, and a few detached statistics.

    logits: [batch, seq, vocab] from the model; labels: [batch, seq] input ids with prompt and padding
    set to -100 (unshifted, as for `AutoModelForCausalLM`). kind: "ce" (SFT/RFT) or "dft".
    num_tokens: response tokens to divide by (default: those in this micro-batch).
    Returns (loss, {"ce": summed cross-entropy, "p": summed p_t, "kl": summed KL, "tokens": count}).
    """
    check_options(kind, alpha)
    labels = shift_labels(labels)
    mask = labels != IGNORE_INDEX
    logp = token_logprobs(logits, labels)  # 0 on ignored positions
    loss, stats = weighted_nll(logp, mask, num_tokens, kind=kind, alpha=alpha, p_floor=p_floor)
    stats["kl"] = 0.0
    if kl_weight > 0:
        if ref_logits is None:
            raise ValueError("token_loss: kl_weight > 0 needs ref_logits (the base model's logits)")
        kl = token_kl(logits, ref_logits, mask)
        denom = torch.as_tensor(stats["tokens"] if num_tokens is None else num_tokens).clamp(min=1)
        loss = loss + kl_weight * kl.sum() / denom
        stats["kl"] = kl.detach().sum().item()
    return loss, stats
