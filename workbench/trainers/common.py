"""What the SFT-family trainers and DPO share: loading the base model, encoding prompt/response rows with
the run's one template, the optimizer schedule, and the plain training loop of SFT, RFT and DFT.

Why a plain loop for the SFT family rather than TRL's `SFTTrainer` with `compute_loss_func`: TRL 1.16
runs a second, no-grad forward pass per micro-batch for its metrics whenever a custom loss is given, which
would make our DFT slower than TRL's own `loss_type="dft"`; and the ASFT option needs the base model's
logits next to the batch. The loop below is short, does exactly one forward/backward per micro-batch,
and normalises like TRL does (sum over the optimizer batch's response tokens / their number). On GPUs it
uses TRL's tiled LM head (`add_fused_lm_head`, the one TRL's own SFT/DFT runs on), which returns per-token
log-probabilities without materialising the [batch, seq, vocab] logits; our loss weights those. On CPU it
takes full logits, which measured faster and smaller there (`fused_lm_head` in the config overrides).
DPO uses TRL's `DPOTrainer`; `hf_args` and `MetricsCallback` adapt a `TrainConfig` to it.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import polars as pl
import torch

from workbench.template import render_prompt
from workbench.trainers.base import MetricsLog, TrainConfig, TrainJob, TrainResult
from workbench.trainers.losses import IGNORE_INDEX, token_loss, weighted_nll


def setup_torch(job: TrainJob) -> torch.device:
    """Thread limit and seeds for this task; the device to train on (the GPU when there is one)."""
    torch.set_num_threads(max(1, job.num_threads))
    random.seed(job.seed)
    torch.manual_seed(job.seed)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_base(job: TrainJob, device: torch.device | str = "cpu"):
    """The base model (float32 master weights) and its tokenizer, from the local folder only (no hub)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(job.base_model, local_files_only=True)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(job.base_model, local_files_only=True, dtype=torch.float32)
    return model.to(device), tokenizer


def require_columns(data: pl.DataFrame, columns: list[str], what: str) -> None:
    missing = [c for c in columns if c not in data.columns]
    if missing:
        raise ValueError(f"{what}: missing column(s) {', '.join(missing)} (has: {', '.join(data.columns)})")
    for c in columns:
        nulls = data[c].null_count()
        if nulls:
            row = data.with_row_index().filter(pl.col(c).is_null())["index"][0]
            raise ValueError(f"{what}: column {c} is null in row {row}")


@dataclass
class Example:
    input_ids: list[int]
    labels: list[int]  # -100 on prompt tokens


def encode_rows(data: pl.DataFrame, tokenizer, job: TrainJob, max_length: int, what: str) -> tuple[list[Example], int]:
    """Prompt (the run's template) + response + EOS, labels masked on the prompt; cut at max_length.

    Prompt and response are tokenized separately so that the model trains on exactly the token boundary it
    generates from. Returns (examples, number of rows dropped because no response token fit).
    """
    require_columns(data, ["problem", "response"], what)
    examples, dropped = [], 0
    for problem, response in zip(data["problem"], data["response"]):
        prompt_ids = tokenizer(render_prompt(tokenizer, problem, job.template), add_special_tokens=False)["input_ids"]
        resp_ids = tokenizer(response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        ids = (prompt_ids + resp_ids)[:max_length]
        if len(ids) <= len(prompt_ids):
            dropped += 1
            continue
        examples.append(Example(ids, [IGNORE_INDEX] * len(prompt_ids) + ids[len(prompt_ids):]))
    if not examples:
        raise ValueError(f"{what}: no row has a response token within max_length={max_length}")
    return examples, dropped


def collate(batch: list[Example], pad_id: int, device) -> dict[str, torch.Tensor]:
    """Right-pad a micro-batch; padding is masked out of attention and labels."""
    width = max(len(e.input_ids) for e in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE_INDEX, dtype=torch.long)
    attn = torch.zeros((len(batch), width), dtype=torch.long)
    for i, e in enumerate(batch):
        n = len(e.input_ids)
        ids[i, :n] = torch.tensor(e.input_ids)
        labels[i, :n] = torch.tensor(e.labels)
        attn[i, :n] = 1
    return {"input_ids": ids.to(device), "labels": labels.to(device), "attention_mask": attn.to(device)}


def plan_steps(n_examples: int, cfg: TrainConfig) -> tuple[int, int]:
    """(optimizer batch size, total optimizer steps) from batch_size, num_epochs and max_steps."""
    batch = cfg.per_device_batch_size * cfg.grad_accum()
    total = math.ceil(cfg.num_epochs * math.ceil(n_examples / batch))
    return batch, (cfg.max_steps if cfg.max_steps > 0 else max(1, total))


def batch_stream(n: int, batch: int, seed: int):
    """Index batches forever: each epoch a fresh seeded shuffle; the last batch of an epoch may be short."""
    rng, epoch = random.Random(seed), 0
    while True:
        order = list(range(n))
        rng.shuffle(order)
        for start in range(0, n, batch):
            yield epoch, order[start:start + batch]
        epoch += 1


def make_schedule(model, cfg: TrainConfig, total_steps: int):
    from transformers import get_scheduler

    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    warmup = math.ceil(cfg.warmup_ratio * total_steps)
    scheduler = get_scheduler(cfg.lr_scheduler, optimizer, num_warmup_steps=warmup, num_training_steps=total_steps)
    return optimizer, scheduler


def use_fused_head(choice: bool | None, device: torch.device | str) -> bool:
    """The SFT-family `fused_lm_head` setting: None means on for GPUs (Triton kernels), off on CPU."""
    return torch.device(device).type == "cuda" if choice is None else bool(choice)


def micro_batch_loss(model, ref, inputs, num_tokens, kind, fused, loss_opts):
    """Forward one micro-batch and return `(loss, stats)` of the SFT-family token loss.

    fused: score the response tokens with TRL's tiled LM head (log-probabilities only, no [batch, seq, vocab]
    logits); otherwise take full logits (and the frozen base model's, for the ASFT KL term).
    """
    ids, attn, labels = inputs["input_ids"], inputs["attention_mask"], inputs["labels"]
    if fused:
        out = model(input_ids=ids, attention_mask=attn, labels=labels, fused_lm_head=True)
        mask = labels[:, 1:] != IGNORE_INDEX
        opts = {k: v for k, v in loss_opts.items() if k != "kl_weight"}
        loss, stats = weighted_nll(out.log_probs, mask, num_tokens, kind=kind, **opts)
        return loss, {**stats, "kl": 0.0}
    logits = model(input_ids=ids, attention_mask=attn).logits
    ref_logits = None
    if ref is not None:
        with torch.no_grad():
            ref_logits = ref(input_ids=ids, attention_mask=attn).logits
    return token_loss(logits, labels, num_tokens, kind=kind, ref_logits=ref_logits, **loss_opts)


def train_token_loss(job: TrainJob, cfg, *, kind: str, what: str) -> TrainResult:
    """Train job.base_model on job.data (problem, response rows) with `token_loss` of `kind` ("ce" or "dft").

    `cfg` is an SFT-family config: TrainConfig plus max_grad_norm and, for DFT, alpha / p_floor / kl_weight.
    """
    device = setup_torch(job)
    model, tokenizer = load_base(job, device)
    examples, dropped = encode_rows(job.data, tokenizer, job, cfg.max_length, what)
    ref = None
    if getattr(cfg, "kl_weight", 0.0) > 0:  # ASFT: a frozen copy of the base model anchors the KL term
        ref, _ = load_base(job, device)
        ref.eval().requires_grad_(False)
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    model.train()
    batch, total_steps = plan_steps(len(examples), cfg)
    optimizer, scheduler = make_schedule(model, cfg, total_steps)
    log = MetricsLog(job.metrics_path)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.bf16)
    loss_opts = {k: getattr(cfg, k) for k in ("alpha", "p_floor", "kl_weight") if hasattr(cfg, k)}
    fused = use_fused_head(getattr(cfg, "fused_lm_head", None), device) and ref is None
    if fused:
        from trl.trainer import add_fused_lm_head

        add_fused_lm_head(model)
    stream = batch_stream(len(examples), batch, job.seed)
    train_tokens = response_tokens = 0
    loss_value = float("nan")
    for step in range(1, total_steps + 1):
        epoch, idx = next(stream)
        items = [examples[i] for i in idx]
        num_tokens = sum(sum(label != IGNORE_INDEX for label in e.labels[1:]) for e in items)
        lr = scheduler.get_last_lr()[0]
        loss_value, sums = 0.0, {"ce": 0.0, "p": 0.0, "kl": 0.0, "tokens": 0}
        for start in range(0, len(items), cfg.per_device_batch_size):
            inputs = collate(items[start:start + cfg.per_device_batch_size], tokenizer.pad_token_id, device)
            with autocast:
                loss, stats = micro_batch_loss(model, ref, inputs, num_tokens, kind, fused, loss_opts)
            loss.backward()
            loss_value += loss.item()
            for k in sums:
                sums[k] += stats[k]
            train_tokens += int(inputs["attention_mask"].sum())
        response_tokens += sums["tokens"]
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), getattr(cfg, "max_grad_norm", 1.0))
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        if step % cfg.logging_steps == 0 or step == total_steps:
            n = max(1, sums["tokens"])
            extra = {"kl": sums["kl"] / n} if ref is not None else {}
            log.log(step, loss=loss_value, learning_rate=lr, ce=sums["ce"] / n, mean_p=sums["p"] / n,
                    grad_norm=float(grad_norm), epoch=epoch, tokens=train_tokens, **extra)
    model.save_pretrained(job.model_dir)
    tokenizer.save_pretrained(job.model_dir)
    return TrainResult(job.model_dir, train_tokens=train_tokens, steps=total_steps,
                       extra={"response_tokens": response_tokens, "examples": len(examples),
                              "dropped_too_long": dropped, "final_loss": loss_value})


# --- adapters for TRL trainers (DPO) ---------------------------------------------------------------


def hf_args(job: TrainJob, cfg: TrainConfig) -> dict:
    """TrainingArguments keywords from a TrainConfig: no hub, no wandb, no checkpoints, output in out_dir."""
    return {
        "output_dir": str(job.out_dir / "trainer"),
        "learning_rate": cfg.learning_rate,
        "num_train_epochs": cfg.num_epochs,
        "max_steps": cfg.max_steps,
        "per_device_train_batch_size": cfg.per_device_batch_size,
        "gradient_accumulation_steps": cfg.grad_accum(),
        "lr_scheduler_type": cfg.lr_scheduler,
        "warmup_steps": min(cfg.warmup_ratio, 0.999),  # a float in [0, 1) is a ratio of total steps
        "weight_decay": cfg.weight_decay,
        "bf16": cfg.bf16,
        "gradient_checkpointing": cfg.gradient_checkpointing,
        "logging_steps": cfg.logging_steps,
        "max_length": cfg.max_length,
        "seed": job.seed,
        "data_seed": job.seed,
        "report_to": "none",
        "save_strategy": "no",
        "push_to_hub": False,
        "disable_tqdm": True,
        "dataloader_num_workers": 0,
        "use_cpu": not torch.cuda.is_available(),
    }


def metrics_callback(log: MetricsLog):
    """A transformers callback copying every training log (those with a loss) into metrics.jsonl."""
    from transformers import TrainerCallback

    class MetricsCallback(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                log.log(state.global_step, **{k: v for k, v in logs.items() if isinstance(v, (int, float))})

    return MetricsCallback()
