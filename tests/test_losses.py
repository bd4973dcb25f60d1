"""The DFT token loss: the Appendix A.4 gradient identity, its options, and prompt masking."""

import pytest
import torch
import torch.nn.functional as F

from workbench.trainers.losses import (
    IGNORE_INDEX,
    LOSS_KINDS,
    LossContext,
    anneal_alpha,
    shift_labels,
    token_logprobs,
    token_loss,
)


def _batch(seed=0, batch=2, seq=7, vocab=11):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, seq, vocab, generator=g, dtype=torch.float64) * 2
    labels = torch.randint(0, vocab, (batch, seq), generator=g)
    labels[:, :3] = IGNORE_INDEX  # prompt tokens
    labels[1, -1] = IGNORE_INDEX  # padding
    return logits, labels


def _grad(fn, logits):
    x = logits.clone().requires_grad_(True)
    fn(x).backward()
    return x.grad


def _target_probs(logits, labels):
    """p_t of every predicted response token (positions shifted as in token_loss), and their count."""
    lab = labels[:, 1:]
    mask = lab != IGNORE_INDEX
    p = F.softmax(logits[:, :-1], -1).gather(-1, lab.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return p[mask], int(mask.sum())


def test_dft_gradient_equals_gradient_of_minus_p():
    logits, labels = _batch()
    g_dft = _grad(lambda x: token_loss(x, labels, kind="dft")[0], logits)

    def minus_p(x):
        p, n = _target_probs(x, labels)
        return -p.sum() / n

    g_p = _grad(minus_p, logits)
    assert torch.allclose(g_dft, g_p, atol=1e-10)
    g_ce = _grad(lambda x: token_loss(x, labels, kind="ce")[0], logits)
    assert not torch.allclose(g_dft, g_ce, atol=1e-3)


def test_dft_value_is_p_weighted_cross_entropy_mean():
    logits, labels = _batch(1)
    p, n = _target_probs(logits, labels)
    loss, stats = token_loss(logits, labels, kind="dft")
    assert stats["tokens"] == n
    assert torch.allclose(loss, (-p * p.log()).sum() / n)
    ce, _ = token_loss(logits, labels, kind="ce")
    assert torch.allclose(ce, -p.log().mean())


def test_alpha_interpolates_between_ce_and_dft():
    logits, labels = _batch(2)
    ce = _grad(lambda x: token_loss(x, labels, kind="ce")[0], logits)
    dft = _grad(lambda x: token_loss(x, labels, kind="dft")[0], logits)
    assert torch.allclose(_grad(lambda x: token_loss(x, labels, kind="dft", alpha=0.0)[0], logits), ce)
    assert torch.allclose(_grad(lambda x: token_loss(x, labels, kind="dft", alpha=1.0)[0], logits), dft)
    half = _grad(lambda x: token_loss(x, labels, kind="dft", alpha=0.5)[0], logits)
    assert torch.allclose(half, 0.5 * ce + 0.5 * dft)


def test_p_floor_clips_weight_from_below():
    logits, labels = _batch(3)
    p, n = _target_probs(logits, labels)
    floor = float(p.median())
    loss, _ = token_loss(logits, labels, kind="dft", p_floor=floor)
    assert torch.allclose(loss, (-p.clamp(min=floor) * p.log()).sum() / n)
    assert token_loss(logits, labels, kind="dft", p_floor=1.0)[0].item() == pytest.approx(
        token_loss(logits, labels, kind="ce")[0].item())


def test_prompt_and_padding_tokens_are_ignored():
    logits, labels = _batch(4)
    changed = logits.clone()
    changed[:, :2] += torch.randn_like(changed[:, :2]) * 5  # positions predicting prompt tokens only
    changed[1, -2:] += 3.0  # the position predicting padding, and the last one (predicts nothing)
    for kind in ("ce", "dft"):
        a, _ = token_loss(logits, labels, kind=kind)
        b, _ = token_loss(changed, labels, kind=kind)
        assert torch.allclose(a, b)
        g = _grad(lambda x, kind=kind: token_loss(x, labels, kind=kind)[0], logits)
        assert g[:, :2].abs().max() == 0 and g[1, -2:].abs().max() == 0


def test_num_tokens_normalises_over_the_optimizer_batch():
    logits, labels = _batch(5)
    whole, stats = token_loss(logits, labels, kind="dft")
    halves = sum(token_loss(logits[i:i + 1], labels[i:i + 1], stats["tokens"], kind="dft")[0] for i in range(2))
    assert torch.allclose(whole, halves)


def test_kl_anchor_is_zero_at_the_base_model_and_positive_away_from_it():
    logits, labels = _batch(6)
    plain, _ = token_loss(logits, labels, kind="dft")
    same, stats = token_loss(logits, labels, kind="dft", kl_weight=0.5, ref_logits=logits.clone())
    assert torch.allclose(plain, same) and stats["kl"] == pytest.approx(0.0, abs=1e-9)
    moved, stats = token_loss(logits, labels, kind="dft", kl_weight=0.5, ref_logits=torch.zeros_like(logits))
    assert moved > plain and stats["kl"] > 0
    with pytest.raises(ValueError, match="ref_logits"):
        token_loss(logits, labels, kind="dft", kl_weight=0.5)


def test_asft_is_the_authors_forward_kl_added_to_each_token():
    """zhuchichi56/ASFT train_v2.py, mode asft: (dft_loss_t + 0.1 * F.kl_div(log_softmax(model), softmax(ref))
    summed over the vocabulary), averaged over the response tokens: KL(base || model). `kl_direction: reverse`
    keeps KL(model || base) (issue 21)."""
    logits, labels = _batch(7)
    ref = logits.flip(-1) * 0.5
    lab = labels[:, 1:]
    mask = lab != IGNORE_INDEX
    shift, shift_ref = logits[:, :-1], ref[:, :-1]
    ce = F.cross_entropy(shift.reshape(-1, 11), lab.reshape(-1), ignore_index=IGNORE_INDEX,
                         reduction="none").view(lab.shape)
    p = torch.softmax(shift, -1).gather(-1, lab.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    forward = F.kl_div(F.log_softmax(shift, -1), F.softmax(shift_ref, -1), reduction="none").sum(-1)
    authors = (ce * p + 0.1 * forward)[mask].sum() / mask.sum()
    ours, stats = token_loss(logits, labels, kind="dft", kl_weight=0.1, ref_logits=ref)
    assert torch.allclose(ours, authors) and stats["kl"] == pytest.approx(float(forward[mask].sum()))
    reverse = F.kl_div(F.log_softmax(shift_ref, -1), F.softmax(shift, -1), reduction="none").sum(-1)
    theirs_reversed = (ce * p + 0.1 * reverse)[mask].sum() / mask.sum()
    ours_reversed, _ = token_loss(logits, labels, kind="dft", kl_weight=0.1, kl_direction="reverse", ref_logits=ref)
    assert torch.allclose(ours_reversed, theirs_reversed) and not torch.allclose(ours_reversed, ours)


def test_bad_options_are_rejected():
    logits, labels = _batch()
    with pytest.raises(ValueError, match="kind"):
        token_loss(logits, labels, kind="mse")
    with pytest.raises(ValueError, match="alpha"):
        token_loss(logits, labels, kind="dft", alpha=2.0)


# --- the DFT family: one gradient test per kind ------------------------------------------------------


def _grad_of_weighted_ce(logits, labels, weight):
    """Gradient of -sum_t sg(weight_t) log p_t / n, computed here from the softmax (not from losses.py).

    `weight` is indexed like the predicted response tokens of `_target_probs` (a flat tensor) or None (1)."""

    def fn(x):
        p, n = _target_probs(x, labels)
        w = torch.ones_like(p) if weight is None else weight
        return -(w.detach() * p.log()).sum() / n

    return _grad(fn, logits)


def test_pk_gradient_is_p_to_the_k_times_the_ce_gradient():
    logits, labels = _batch(7)
    p, _ = _target_probs(logits, labels)
    for k in (0.5, 1.0, 3.0):
        g = _grad(lambda x, k=k: token_loss(x, labels, kind="pk", k=k)[0], logits)
        assert torch.allclose(g, _grad_of_weighted_ce(logits, labels, p ** k), atol=1e-10)
    dft = _grad(lambda x: token_loss(x, labels, kind="dft")[0], logits)
    assert torch.allclose(_grad(lambda x: token_loss(x, labels, kind="pk", k=1.0)[0], logits), dft, atol=1e-10)
    ce = _grad(lambda x: token_loss(x, labels, kind="ce")[0], logits)
    assert torch.allclose(_grad(lambda x: token_loss(x, labels, kind="pk", k=0.0)[0], logits), ce)
    assert torch.allclose(_grad(lambda x: token_loss(x, labels, kind="pk", k=1e-4)[0], logits), ce, atol=1e-3)
    loss, _ = token_loss(logits, labels, kind="pk", k=2.0)
    n = _target_probs(logits, labels)[1]
    assert torch.allclose(loss, ((1 - p ** 2) / 2).sum() / n)


def test_profit_gradient_is_ce_on_kept_tokens_over_all_tokens():
    logits, labels = _batch(8)
    p, n = _target_probs(logits, labels)
    tau = float(p.median())
    g = _grad(lambda x: token_loss(x, labels, kind="profit", tau=tau)[0], logits)
    assert torch.allclose(g, _grad_of_weighted_ce(logits, labels, (p >= tau).double()), atol=1e-10)
    loss, stats = token_loss(logits, labels, kind="profit", tau=tau)
    assert stats["kept"] == int((p >= tau).sum()) < n
    assert torch.allclose(loss, -(p.log() * (p >= tau)).sum() / n)  # divided by all response tokens
    ce = _grad(lambda x: token_loss(x, labels, kind="ce")[0], logits)
    assert torch.allclose(_grad(lambda x: token_loss(x, labels, kind="profit", tau=0.0)[0], logits), ce)


def _ref_batch(seed, scale=1.0, **shape):
    logits, labels = _batch(seed, **shape)
    ref = logits + scale * torch.randn(logits.shape, generator=torch.Generator().manual_seed(seed + 100),
                                       dtype=logits.dtype)
    return logits, labels, ref


def test_iwsft_gradient_is_ce_weighted_by_the_clipped_sequence_ratio():
    logits, labels, ref = _ref_batch(9)
    lab = labels[:, 1:]
    mask = lab != IGNORE_INDEX
    logp = F.log_softmax(logits[:, :-1], -1).gather(-1, lab.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    ref_logp = F.log_softmax(ref[:, :-1], -1).gather(-1, lab.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    mean_ratio = ((logp - ref_logp) * mask).sum(-1) / mask.sum(-1)
    w_seq = torch.exp(mean_ratio).clamp(0, 16.0)
    weight = w_seq.unsqueeze(-1).expand_as(logp)[mask]
    g = _grad(lambda x: token_loss(x, labels, kind="iwsft", ref_logits=ref)[0], logits)
    assert torch.allclose(g, _grad_of_weighted_ce(logits, labels, weight), atol=1e-10)
    # token level: per-token ratio clipped to [0.2, 1.8]
    w_tok = torch.exp(logp - ref_logp).clamp(0.2, 1.8)[mask]
    g = _grad(lambda x: token_loss(x, labels, kind="iwsft", iw_level="token", ref_logits=ref)[0], logits)
    assert torch.allclose(g, _grad_of_weighted_ce(logits, labels, w_tok), atol=1e-10)
    # at the base model every weight is 1: iw-SFT is SFT
    ce = _grad(lambda x: token_loss(x, labels, kind="ce")[0], logits)
    assert torch.allclose(_grad(lambda x: token_loss(x, labels, kind="iwsft", ref_logits=logits)[0], logits), ce)
    with pytest.raises(ValueError, match="ref_logits"):
        token_loss(logits, labels, kind="iwsft")


def test_psft_gradient_is_ce_inside_the_trust_region_and_zero_above_it():
    logits, labels, old = _ref_batch(10, scale=0.4, batch=4, seq=12)
    ce = _grad(lambda x: token_loss(x, labels, kind="ce")[0], logits)
    same = LossContext(old_logp=token_logprobs(logits, shift_labels(labels)).detach())
    assert torch.allclose(_grad(lambda x: token_loss(x, labels, kind="psft", ctx=same)[0], logits), ce)
    # ratio r = p / p_old: gradient -r grad log p where r <= 1.28 (or below the lower clip, where min picks r),
    # none where r > 1.28
    lab = labels[:, 1:]
    mask = lab != IGNORE_INDEX
    logp = F.log_softmax(logits[:, :-1], -1).gather(-1, lab.clamp(min=0).unsqueeze(-1)).squeeze(-1)[mask]
    old_logp = token_logprobs(old, shift_labels(labels))
    ratio = torch.exp(logp - old_logp[:, :-1][mask])
    assert (ratio > 1.28).any() and (ratio < 0.8).any() and ((ratio >= 0.8) & (ratio <= 1.28)).any()
    weight = torch.where(ratio > 1.28, torch.zeros_like(ratio), ratio)
    g = _grad(lambda x: token_loss(x, labels, kind="psft", ctx=LossContext(old_logp=old_logp))[0], logits)
    assert torch.allclose(g, _grad_of_weighted_ce(logits, labels, weight), atol=1e-10)
    with pytest.raises(ValueError, match="old_logp"):
        token_loss(logits, labels, kind="psft")


def test_anneal_moves_from_dft_to_ce():
    logits, labels = _batch(11)
    ce = _grad(lambda x: token_loss(x, labels, kind="ce")[0], logits)
    dft = _grad(lambda x: token_loss(x, labels, kind="dft")[0], logits)

    def at(progress, **opts):
        return _grad(lambda x: token_loss(x, labels, kind="anneal", ctx=LossContext(progress=progress),
                                          **opts)[0], logits)

    assert torch.allclose(at(0.0), dft) and torch.allclose(at(1.0), ce)
    assert torch.allclose(at(0.25), 0.75 * dft + 0.25 * ce)
    assert torch.allclose(at(0.5, anneal_start=0.5), dft)  # pure DFT until the start
    assert torch.allclose(at(0.9, anneal_end=0.8), ce)  # pure CE after the end
    assert anneal_alpha(0.5, shape="cosine") == pytest.approx(0.5)
    assert anneal_alpha(0.25, shape="cosine") == pytest.approx(0.5 * (1 + 2 ** -0.5))
    with pytest.raises(ValueError, match="anneal"):
        anneal_alpha(0.5, start=0.6, end=0.4)


@pytest.mark.parametrize("kind", sorted(LOSS_KINDS))
def test_every_kind_logs_plain_ce_and_the_dft_loss(kind):
    logits, labels, ref = _ref_batch(12)
    p, n = _target_probs(logits, labels)
    ctx = LossContext(progress=0.3, old_logp=token_logprobs(ref, shift_labels(labels)))
    _, stats = token_loss(logits, labels, kind=kind, ref_logits=ref, ctx=ctx)
    assert stats["tokens"] == n
    assert stats["ce"] == pytest.approx(float(-p.log().sum()))
    assert stats["dft"] == pytest.approx(float(-(p * p.log()).sum()))
    assert stats["p"] == pytest.approx(float(p.sum()))
    # padding and prompt positions never carry loss, whatever the kind does at logp = 0
    g = _grad(lambda x: token_loss(x, labels, kind=kind, ref_logits=ref, ctx=ctx)[0], logits)
    assert g[:, :2].abs().max() == 0 and g[1, -2:].abs().max() == 0


def test_unknown_option_of_a_kind_is_rejected():
    logits, labels = _batch()
    with pytest.raises(ValueError, match="takes no option"):
        token_loss(logits, labels, kind="pk", tau=0.3)


@pytest.mark.parametrize("kind", ["ce", "dft"])
def test_weighted_nll_ignores_whatever_masked_positions_hold(kind):
    """A fused LM head need not write 0 at ignored positions: NaN, -inf or a positive log-prob there changes
    neither the loss, the stats nor the (finite, zero there) gradient."""
    from workbench.trainers.losses import weighted_nll

    logits, labels = _batch(3)
    lab = shift_labels(labels)
    mask = lab != IGNORE_INDEX
    clean = token_logprobs(logits, lab).masked_fill(~mask, 0.0)
    want, want_stats = weighted_nll(clean, mask, kind=kind)
    for junk in (float("nan"), float("-inf"), 3.0):
        logp = clean.detach().masked_fill(~mask, junk).requires_grad_(True)
        loss, stats = weighted_nll(logp, mask, kind=kind)
        loss.backward()
        assert torch.equal(loss, want) and stats == want_stats, junk
        assert torch.isfinite(logp.grad).all() and logp.grad[~mask].abs().max() == 0, junk
