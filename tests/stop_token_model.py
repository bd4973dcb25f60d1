"""Test helper: SmolLM2's ChatML tokenizer on a tiny model that always writes one chosen token.

Set up like Qwen2.5-Math-1.5B (base): the tokenizer's EOS and the generation config name only
`<|endoftext|>`, while the chat template ends a turn with `<|im_end|>`. The model writes `<|im_end|>` at every
step (all token embeddings equal, attention and MLP outputs zeroed, one lm_head row aligned with the final
hidden state), in transformers and in vLLM alike, so a sampler that does not stop on the end-of-turn token
runs to max_tokens.
"""

from __future__ import annotations

from pathlib import Path


def chatml_tokenizer():
    """SmolLM2-135M-Instruct's tokenizer with EOS and padding set to `<|endoftext|>` (Qwen2.5-Math base's
    layout; SmolLM2 itself names `<|im_end|>` for both)."""
    from transformers import AutoTokenizer

    from workbench.models import resolve_model

    tok = AutoTokenizer.from_pretrained(resolve_model("smollm2-135m"))
    tok.eos_token = tok.pad_token = "<|endoftext|>"
    return tok


def always_token_model(tokenizer, token: str = "<|im_end|>"):
    """A 1-layer Llama over `tokenizer`'s vocabulary whose every next token is `token` (logit 64 vs 0)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=512,
                         tie_word_embeddings=False, eos_token_id=tokenizer.eos_token_id,
                         bos_token_id=None, pad_token_id=tokenizer.pad_token_id)
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        model.model.embed_tokens.weight.fill_(1.0)
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        model.lm_head.weight.zero_()
        model.lm_head.weight[tokenizer.convert_tokens_to_ids(token)] = 1.0
    model.generation_config.eos_token_id = tokenizer.eos_token_id  # only <|endoftext|>
    model.generation_config.bos_token_id = None
    return model


def save_always_token_model(folder: Path, token: str = "<|im_end|>") -> Path:
    """Save that model and tokenizer as a Hugging Face folder (for vLLM and the trainers)."""
    tok = chatml_tokenizer()
    always_token_model(tok, token).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder
