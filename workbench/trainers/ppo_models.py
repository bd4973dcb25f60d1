"""The three models PPO holds (actor, critic, reference), how they are built and sharded, how a rollout batch is
shared by N workers (`plan`, `launch_problem`), and the padded batch they read. `workbench/trainers/ppo.py` is
the loop that uses them.

- actor: the policy, float32 master weights, initialised from the base model; it is what gets saved;
- critic: the base model's transformer with a scalar value head (one value per token), float32;
- reference: a frozen copy of the base model in the actor's dtype (float32; bf16 autocast when `bf16` is set,
  as the actor), so that before the first update it computes exactly the actor's log-probabilities and the KL
  starts at 0 (TRL builds the reference in the policy's dtype; verl holds actor and reference both in bf16).
  Loaded only when PPO has a KL term (`kl_coef` > 0).

With N Ray Train workers (launch.py) each of the three is sharded with FSDP2 (`launch.shard`: every decoder
layer, then the root), so weights, gradients and AdamW states are split across the workers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from workbench.trainers.launch import shard

if TYPE_CHECKING:
    from workbench.trainers.ppo import PPOConfig


class Critic(torch.nn.Module):
    """The base model's transformer body with a scalar value head (zero-initialised: V starts at 0)."""

    def __init__(self, base_model_dir: str):
        super().__init__()
        from transformers import AutoModel

        self.body = AutoModel.from_pretrained(base_model_dir, dtype=torch.float32)
        self.head = torch.nn.Linear(self.body.config.hidden_size, 1)
        torch.nn.init.zeros_(self.head.weight)
        torch.nn.init.zeros_(self.head.bias)

    def forward(self, input_ids, attention_mask, position_ids, n_response: int):
        """Value of the state before each response token ([B, n_response])."""
        hidden = self.body(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                           use_cache=False).last_hidden_state[:, -n_response - 1 : -1]
        return self.head(hidden.float()).squeeze(-1)  # under autocast the head still multiplies in bf16


def no_dropout(model):
    """No dropout anywhere, so train and eval mode compute the same function and the PPO ratio is exactly 1
    before the first update (Qwen2/Llama configs have 0 already; this makes it hold for any model)."""
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
        if isinstance(getattr(m, "attention_dropout", None), float):
            m.attention_dropout = 0.0
    return model


def build_models(base_model: str, *, with_ref: bool, gradient_checkpointing: bool, device, world: int):
    """(actor, critic, reference or None) on `device`, sharded with FSDP2 when `world` > 1."""
    from transformers import AutoModelForCausalLM

    actor = no_dropout(AutoModelForCausalLM.from_pretrained(base_model, dtype=torch.float32)).to(device)
    critic = no_dropout(Critic(str(base_model))).to(device)
    ref = None
    if with_ref:
        ref = AutoModelForCausalLM.from_pretrained(base_model, dtype=actor.dtype)
        ref = no_dropout(ref).to(device).requires_grad_(False).eval()
    if gradient_checkpointing:
        actor.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        critic.body.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if world > 1:
        shard(actor)
        shard(critic, layers_of=critic.body)
        if ref is not None:
            shard(ref)
    return actor, critic, ref


def batch_tensors(prompt_ids: list[list[int]], responses: list[list[int]], pad: int, device):
    """Left-padded prompts + right-padded responses -> input_ids, attention_mask, position_ids, resp, mask."""
    plen, rlen = max(map(len, prompt_ids)), max(1, max(map(len, responses)))
    rows, attn, resp, mask = [], [], [], []
    for p, r in zip(prompt_ids, responses):
        rows.append([pad] * (plen - len(p)) + p + r + [pad] * (rlen - len(r)))
        attn.append([0] * (plen - len(p)) + [1] * (len(p) + len(r)) + [0] * (rlen - len(r)))
        resp.append(r + [pad] * (rlen - len(r)))
        mask.append([1] * len(r) + [0] * (rlen - len(r)))
    attn_t = torch.tensor(attn, device=device)
    pos = (attn_t.cumsum(-1) - 1).clamp(min=0)
    return (torch.tensor(rows, device=device), attn_t, pos, torch.tensor(resp, device=device),
            torch.tensor(mask, device=device).float())


def mmap_threshold(mib: int) -> None:
    """Serve heap blocks of `mib` MiB and more by mmap from now on (glibc `mallopt(M_MMAP_THRESHOLD)`), and give
    the heap's free pages back to the system (`malloc_trim(0)`). A no-op outside glibc.

    PPO switches per phase on CPU. Updates: 1 MiB, so a freed activation or logit chunk returns its memory at
    once; glibc otherwise keeps such blocks in its heaps and the resident set of a SmolLM2 iteration grew from
    6.0 to 6.7-7.9 GiB (benchmarks/ppo.py). Rollouts and the no-grad passes: 64 MiB, because below that every
    activation (and every KV-cache step of HF generate) is a fresh mmap whose pages the kernel zeroes: a SmolLM2
    forward took 1.5x as long and HF generate 2.2x.
    """
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim(0)
        libc.mallopt(-3, mib << 20)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        pass


def adamw(params, lr: float, cfg):
    """AdamW with the fused kernel (no full-size temporaries, unlike the foreach default)."""
    return torch.optim.AdamW(params, lr=lr, weight_decay=cfg.weight_decay, betas=(cfg.adam_beta1, cfg.adam_beta2),
                             fused=True)


def plan(cfg: PPOConfig, n_available: int, world: int) -> tuple[int, int]:
    """(prompts per rollout batch, sequences per minibatch), both divisible by the worker count: each worker
    rolls out and trains on an equal share, so every worker runs the same number of sharded forward passes."""
    n_prompts = min(cfg.rollout_batch_size, n_available)
    n_prompts -= n_prompts % world
    if n_prompts == 0:
        raise ValueError(f"ppo: rollout_batch_size: {min(cfg.rollout_batch_size, n_available)} prompts cannot be "
                         f"shared by num_workers={world}")
    minibatch = min(cfg.batch_size, n_prompts * cfg.samples_per_prompt)
    if minibatch % world:
        raise ValueError(f"ppo: batch_size: {minibatch} sequences per minibatch are not divisible by "
                         f"num_workers={world}")
    return n_prompts, minibatch


def launch_problem(cfg: PPOConfig, world: int, save_steps: int) -> tuple[str, str] | None:
    """(field, one-line reason) when `cfg` cannot be shared by `world` workers (launch.check_entry: refused when
    the recipe loads; `plan` checks again against the prompts there are)."""
    minibatch = min(cfg.batch_size, cfg.rollout_batch_size * cfg.samples_per_prompt)
    if cfg.rollout_batch_size % world:
        return "num_workers", f"ppo: rollout_batch_size={cfg.rollout_batch_size} is not divisible by num_workers={world}"
    if minibatch % world:
        return "num_workers", f"ppo: batch_size={minibatch} sequences is not divisible by num_workers={world}"
    share = minibatch // world
    if share % min(cfg.per_device_batch_size, share):
        return "batch_size", (f"ppo: batch_size={minibatch} is not a multiple of per_device_batch_size x "
                              f"num_workers = {cfg.per_device_batch_size} x {world}")
    return None
