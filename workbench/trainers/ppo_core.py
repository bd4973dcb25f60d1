"""PPO's pure math, as verl writes it (verl/trainer/ppo/core_algos.py): GAE, whitening, the clipped surrogate
and value losses, the KL estimates, and response log-probabilities computed in checkpointed chunks.

Every tensor is [batch, response_len]; `mask` is 1 on real response tokens. `workbench/trainers/ppo.py` is the
trainer that uses them.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch.utils.checkpoint import checkpoint


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (x * mask).sum() / mask.sum().clamp(min=1)


def compute_gae(rewards, values, mask, gamma: float, lam: float):
    """Generalised advantage estimation. Returns (advantages, returns = advantages + values).

    delta_t = r_t + gamma * V_{t+1} - V_t, A_t = delta_t + gamma * lam * A_{t+1}; after the last valid
    token the episode has ended (V = 0, A = 0). Padding (mask 0) must come after the valid tokens.
    """
    rewards, values = rewards * mask, values * mask
    advantages = torch.zeros_like(rewards)
    next_value = torch.zeros_like(rewards[:, 0])
    next_adv = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(rewards.shape[1])):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        advantages[:, t] = delta + gamma * lam * next_adv
        next_value, next_adv = values[:, t], advantages[:, t]
    advantages = advantages * mask
    return advantages, (advantages + values) * mask


def whiten(x: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8, total=None) -> torch.Tensor:
    """(x - mean) / std over the valid tokens (unbiased variance, as verl's masked_whiten). `total` sums a
    tuple of numbers over the workers (launch.all_sum) when the batch is split across them: the mean and
    variance are then the whole batch's, as verl computes them on the gathered batch."""
    if total is None:
        mean = masked_mean(x, mask)
        n = mask.sum()
        var = (((x - mean) ** 2) * mask).sum() / (n - 1).clamp(min=1)
        return (x - mean) * torch.rsqrt(var + eps) * mask
    sum_x, n = total((float((x * mask).sum()), float(mask.sum())))
    mean = sum_x / max(n, 1.0)
    (sum_sq,) = total((float((((x - mean) ** 2) * mask).sum()),))
    var = sum_sq / max(n - 1, 1.0)
    return (x - mean) * (var + eps) ** -0.5 * mask


def policy_loss(logprobs, old_logprobs, advantages, mask, clip: float, clip_c: float = 3.0):
    """PPO clipped surrogate with verl's dual clip, averaged over valid tokens. Returns (loss, clipfrac).

    As verl's core_algos.compute_policy_loss: the log-ratio is clamped to [-20, 20] before exp (a token whose
    probability moved by e^20 cannot overflow the ratio); per token max(-A r, -A clip(r, 1 +- clip)); where the
    advantage is negative the loss is further capped at -A * clip_c (dual-clip PPO, Ye et al. 2020; verl
    clip_ratio_c=3.0), so a token whose ratio has run far above 1 + clip cannot dominate the batch."""
    ratio = torch.exp(torch.clamp(logprobs - old_logprobs, -20.0, 20.0))
    loss_unclipped = -advantages * ratio
    loss_clipped = -advantages * torch.clamp(ratio, 1.0 - clip, 1.0 + clip)
    clipped = torch.maximum(loss_unclipped, loss_clipped)
    dual = torch.minimum(clipped, -advantages * clip_c)
    loss = masked_mean(torch.where(advantages < 0, dual, clipped), mask)
    clipfrac = masked_mean((loss_clipped > loss_unclipped).float(), mask)
    return loss, clipfrac


def value_loss(values, old_values, returns, mask, clip: float):
    """Clipped value loss 0.5 * max((V - R)^2, (V_clip - R)^2), V_clip = V_old + clamp(V - V_old, +-clip)."""
    clipped = old_values + torch.clamp(values - old_values, -clip, clip)
    loss = 0.5 * masked_mean(torch.maximum((values - returns) ** 2, (clipped - returns) ** 2), mask)
    return loss


def kl_estimate(logprobs, ref_logprobs, kind: Literal["k1", "k3"]):
    """Per-token KL(pi || pi_ref) estimates (verl core_algos.kl_penalty): k1 = log pi - log pi_ref (verl "kl",
    used in the reward); k3 = exp(-k1) + k1 - 1, clamped to [-10, 10] (verl "low_var_kl", the loss term)."""
    k1 = logprobs - ref_logprobs
    return k1 if kind == "k1" else torch.clamp(torch.exp(-k1) + k1 - 1, -10.0, 10.0)


def _chunk_logprobs(head, hidden, tokens, temperature: float, with_entropy: bool):
    """log p(token) (and the entropy) for one chunk of positions: logits exist for this chunk only. Under bf16
    autocast the head's matmul runs in bf16; its logits are upcast to float32 before the log-softmax."""
    logits = head(hidden).float() / temperature
    lse = logits.logsumexp(-1)
    logp = logits.gather(-1, tokens.unsqueeze(-1)).squeeze(-1) - lse
    if not with_entropy:
        return logp.unsqueeze(0)
    entropy = lse - (torch.softmax(logits, -1) * logits).sum(-1)
    return torch.stack([logp, entropy])


def final_hidden(model, ids, attn, pos) -> torch.Tensor:
    """The transformer's last hidden states ([B, T, H]) through the model's own forward (LM head on one
    position only, `logits_to_keep=1`): under FSDP2 the root module's forward is what gathers the embeddings,
    final norm and LM head, and keeps them gathered for the chunked head and its backward."""
    seen = []
    hook = model.base_model.register_forward_hook(lambda _m, _a, out: seen.append(out.last_hidden_state))
    try:
        model(input_ids=ids, attention_mask=attn, position_ids=pos, use_cache=False, logits_to_keep=1)
    finally:
        hook.remove()
    return seen[0]


def response_logprobs(model, ids, attn, pos, resp, temperature: float = 1.0, chunk_tokens: int = 1024,
                      with_entropy: bool = False):
    """log pi(resp_t | prefix) of the response tokens ([B, R]) and, if asked, the entropies (else None).

    The transformer runs once; the LM head runs on the response positions only, `chunk_tokens` positions x
    rows at a time, each chunk checkpointed when gradients are on (backward recomputes its logits instead of
    keeping them). Logits are divided by the sampling temperature, as verl's actor does.
    """
    r = resp.shape[1]
    hidden = final_hidden(model, ids, attn, pos)[:, -r - 1 : -1]
    head, step = model.get_output_embeddings(), max(1, chunk_tokens // max(1, ids.shape[0]))
    parts = []
    for s in range(0, r, step):
        args = (head, hidden[:, s : s + step], resp[:, s : s + step], temperature, with_entropy)
        parts.append(checkpoint(_chunk_logprobs, *args, use_reentrant=False) if torch.is_grad_enabled()
                     else _chunk_logprobs(*args))
    out = torch.cat(parts, dim=-1)
    return out[0], (out[1] if with_entropy else None)
