"""The DFT token loss: the Appendix A.4 gradient identity, its options, and prompt masking."""

import pytest
import torch
import torch.nn.functional as F

from workbench.trainers.losses import IGNORE_INDEX, token_loss


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


def test_bad_options_are_rejected():
    logits, labels = _batch()
    with pytest.raises(ValueError, match="kind"):
        token_loss(logits, labels, kind="mse")
    with pytest.raises(ValueError, match="alpha"):
        token_loss(logits, labels, kind="dft", alpha=2.0)
