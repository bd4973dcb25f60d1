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
from workbench.trainers import checkpoint
from workbench.trainers.base import MetricsLog, TrainConfig, TrainJob, TrainResult
from workbench.trainers.launch import all_sum, scalar, shard, split_batch, worker_batch, worker_device
from workbench.trainers.losses import (
    IGNORE_INDEX,
    LossContext,
    loss_kind,
    loss_options,
    shift_labels,
    token_logprobs,
    token_loss,
    weighted_nll,
)


def setup_torch(job: TrainJob) -> torch.device:
    """Thread limit and seeds for this task; the device to train on (the GPU when there is one)."""
    torch.set_num_threads(max(1, job.num_threads))
    random.seed(job.seed)
    torch.manual_seed(job.seed)
    return worker_device()  # cuda:LOCAL_RANK under several workers


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


def fit_prompts(tokenizer, prompts: list[str], answers: list[str], max_prompt_tokens: int, who: str = "trainer"):
    """(prompts, answers) whose rendered prompt has at most `max_prompt_tokens` tokens (max_length -
    max_completion_length), and how many were left out (verl's filter_overlong_prompts); refuses, naming `who`,
    when none is left."""
    keep = [i for i, p in enumerate(prompts)
            if len(tokenizer(p, add_special_tokens=False)["input_ids"]) <= max_prompt_tokens]
    if prompts and not keep:
        raise ValueError(f"{who}: every prompt is longer than max_length - max_completion_length = "
                         f"{max_prompt_tokens} tokens")
    return [prompts[i] for i in keep], [answers[i] for i in keep], len(prompts) - len(keep)


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


def blank(example: Example) -> Example:
    """An example that trains nothing (every label ignored): the filler micro-batch of a worker whose share
    of a short global batch has run out, so that every worker runs FSDP's collectives equally often."""
    return Example(example.input_ids[:1], [IGNORE_INDEX])


def batch_problem(cfg: TrainConfig, world: int, save_steps: int = 0) -> tuple[str, str] | None:
    """("batch_size", one-line reason) when `batch_size` sequences cannot be cut into equal micro-batches on
    `world` workers: each worker takes batch_size / world of them in micro-batches of min(per_device_batch_size,
    that share). Refused when the recipe loads (a trainer's `check_launch`, launch.check_entry), because a
    floored accumulation would silently train on another batch (20 with micro-batch 8 on 16)."""
    batch, micro = cfg.batch_size, cfg.per_device_batch_size
    if batch % world:
        return "batch_size", f"batch_size={batch} is not divisible by num_workers={world}"
    share = batch // world
    if share % min(micro, share):
        return "batch_size", (f"batch_size={batch} is not a multiple of per_device_batch_size x num_workers = "
                              f"{micro} x {world}: it would train on {share // micro * micro * world} sequences "
                              "per step")
    return None


def plan_steps(n_examples: int, cfg: TrainConfig) -> tuple[int, int]:
    """(optimizer batch size, total optimizer steps) from batch_size, num_epochs and max_steps."""
    batch = cfg.batch_size
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

    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay,
                                  betas=(cfg.adam_beta1, cfg.adam_beta2))
    warmup = math.ceil(cfg.warmup_ratio * total_steps)
    scheduler = get_scheduler(cfg.lr_scheduler, optimizer, num_warmup_steps=warmup, num_training_steps=total_steps)
    return optimizer, scheduler


def use_fused_head(choice: bool | None, device: torch.device | str) -> bool:
    """The SFT-family `fused_lm_head` setting: None means on for GPUs (Triton kernels), off on CPU."""
    return torch.device(device).type == "cuda" if choice is None else bool(choice)


def micro_batch_loss(model, ref, inputs, num_tokens, kind, fused, loss_opts, progress=0.0, old=None):
    """Forward one micro-batch and return `(loss, stats)` of the SFT-family token loss.

    fused: score the response tokens with TRL's tiled LM head (log-probabilities only, no [batch, seq, vocab]
    logits); otherwise take full logits (and the frozen base model's, `ref`, for the ASFT KL term and
    iw-SFT's weights; and the previous policy's log-probabilities, `old`, for Proximal SFT).
    progress: (step - 1) / (total_steps - 1), for scheduled kinds (anneal).
    """
    ids, attn, labels = inputs["input_ids"], inputs["attention_mask"], inputs["labels"]
    ctx = LossContext(progress=progress)
    if fused:
        out = model(input_ids=ids, attention_mask=attn, labels=labels, fused_lm_head=True)
        mask = labels[:, 1:] != IGNORE_INDEX
        opts = {k: v for k, v in loss_opts.items() if k not in ("kl_weight", "kl_direction")}
        loss, stats = weighted_nll(out.log_probs, mask, num_tokens, kind=kind, ctx=ctx, **opts)
        return loss, {**stats, "kl": 0.0}
    logits = model(input_ids=ids, attention_mask=attn).logits
    ref_logits = None
    with torch.no_grad():
        if ref is not None:
            ref_logits = ref(input_ids=ids, attention_mask=attn).logits
        if old is not None:
            ctx.old_logp = token_logprobs(old(input_ids=ids, attention_mask=attn).logits, shift_labels(labels))
    return token_loss(logits, labels, num_tokens, kind=kind, ref_logits=ref_logits, ctx=ctx, **loss_opts)


def train_token_loss(job: TrainJob, cfg, *, kind: str, what: str) -> TrainResult:
    """Train job.base_model on job.data (problem, response rows) with `token_loss` of `kind` (a key of
    `losses.LOSS_KINDS`: "ce", "dft", "pk", ...).

    `cfg` is an SFT-family config: TrainConfig plus max_grad_norm and the kind's options (`loss_options`).
    """
    if problem := batch_problem(cfg, checkpoint.rank_world()[1]):
        raise ValueError(f"{what}: {problem[1]}")
    device = setup_torch(job)
    model, tokenizer = load_base(job, device)
    examples, dropped = encode_rows(job.data, tokenizer, job, cfg.max_length, what)
    ref = old = None
    needs = loss_kind(kind).needs
    if getattr(cfg, "kl_weight", 0.0) > 0 or needs == "ref":  # ASFT's KL anchor, iw-SFT's weights
        ref, _ = load_base(job, device)
        ref.eval().requires_grad_(False)
    if needs == "old":  # Proximal SFT: the policy as of the last refresh (every cfg.old_policy_every steps)
        old, _ = load_base(job, device)
        old.eval().requires_grad_(False)
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    model.train()
    rank, world = checkpoint.rank_world()
    if world > 1:  # N Ray Train workers (launch.py): FSDP2 shards weights, gradients and AdamW states
        for m in (model, ref, old):
            if m is not None:
                shard(m)
    batch, total_steps = plan_steps(len(examples), cfg)
    optimizer, scheduler = make_schedule(model, cfg, total_steps)
    log = job.metrics_log() if rank == 0 else None  # rank 0 logs the all-reduced step
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.bf16)
    loss_opts = loss_options(cfg, kind)
    fused = use_fused_head(getattr(cfg, "fused_lm_head", None), device) and ref is None and old is None
    if fused:
        from trl.trainer import add_fused_lm_head

        add_fused_lm_head(model)
    stream = batch_stream(len(examples), batch, job.seed)
    state = checkpoint.resume(job, model=model, optimizer=optimizer, scheduler=scheduler, extra_models={"old": old})
    for _ in range(state["step"]):  # the data position: the stream is a function of (seed, step)
        next(stream)
    train_tokens, response_tokens = state.get("train_tokens", 0), state.get("response_tokens", 0)
    loss_value = float("nan")
    for step in range(state["step"] + 1, total_steps + 1):
        epoch, idx = next(stream)
        items = [examples[i] for i in idx]
        num_tokens = sum(sum(label != IGNORE_INDEX for label in e.labels[1:]) for e in items)
        lr = scheduler.get_last_lr()[0]
        if old is not None and (step - 1) % getattr(cfg, "old_policy_every", 1) == 0:
            old.load_state_dict(model.state_dict())
        progress = (step - 1) / max(1, total_steps - 1)
        loss_value, sums = 0.0, {"ce": 0.0, "dft": 0.0, "p": 0.0, "kl": 0.0, "kept": 0, "tokens": 0}
        step_tokens = 0
        for chunk in split_batch(items, rank, world, cfg.per_device_batch_size)[0]:  # this worker's share
            inputs = collate(chunk or [blank(items[0])], tokenizer.pad_token_id, device)
            with autocast:
                loss, stats = micro_batch_loss(model, ref, inputs, num_tokens, kind, fused, loss_opts,
                                               progress, old)
            (loss * world).backward()  # FSDP averages gradients over workers; the loss is a global sum
            loss_value += loss.item()
            for k in sums:
                sums[k] += stats[k]
            step_tokens += int(inputs["attention_mask"].sum()) if chunk else 0
        loss_value, sums, step_tokens = all_sum((loss_value, sums, step_tokens))
        train_tokens += step_tokens
        response_tokens += sums["tokens"]
        grad_norm = scalar(torch.nn.utils.clip_grad_norm_(model.parameters(), getattr(cfg, "max_grad_norm", 1.0)))
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        if rank == 0 and (step % cfg.logging_steps == 0 or step == total_steps):
            n = max(1, sums["tokens"])
            extra = {"kl": sums["kl"] / n} if ref is not None else {}
            log.log(step, loss=loss_value, learning_rate=lr, ce=sums["ce"] / n, dft_loss=sums["dft"] / n,
                    mean_p=sums["p"] / n, kept=sums["kept"] / n, grad_norm=float(grad_norm), epoch=epoch,
                    tokens=train_tokens, **extra)
        if job.save_steps and step % job.save_steps == 0 and (step < total_steps or job.keep_checkpoints):
            checkpoint.save_checkpoint(job.out_dir, step, model=model, optimizer=optimizer, scheduler=scheduler,
                                       tokenizer=tokenizer, keep_models=job.keep_checkpoints, extra_models={"old": old},
                                       counters={"epoch": epoch, "train_tokens": train_tokens,
                                                 "response_tokens": response_tokens})
    checkpoint.export_model(model, tokenizer, job.model_dir)
    checkpoint.finish(job)
    if log is not None:
        log.close()
    return TrainResult(job.model_dir, train_tokens=train_tokens, steps=total_steps,
                       extra={"response_tokens": response_tokens, "examples": len(examples),
                              "dropped_too_long": dropped, "final_loss": loss_value,
                              "num_workers": world, "resumed_from_step": state["step"]})


# --- adapters for TRL trainers (DPO) ---------------------------------------------------------------


def hf_args(job: TrainJob, cfg: TrainConfig) -> dict:
    """TrainingArguments keywords from a TrainConfig: no hub, no wandb, output in out_dir. Under N workers
    (launch.py) the per-worker micro-batch and accumulation keep the global batch at `batch_size` (exactly: see
`batch_problem`; a micro-batch larger than the batch shrinks to it), and CPU
    workers talk gloo; `job.save_steps` turns on the Trainer's checkpoints (checkpoint.hf_checkpoint_callback
    moves them into checkpoints/step-<N>/)."""
    world = checkpoint.rank_world()[1]
    micro, accum = worker_batch(cfg.batch_size, cfg.per_device_batch_size, world, f"{job.name or 'train'}")
    on_gpu = torch.cuda.is_available()
    return {
        "output_dir": str(job.out_dir / "trainer"),
        "learning_rate": cfg.learning_rate,
        "num_train_epochs": cfg.num_epochs,
        "max_steps": cfg.max_steps,
        "per_device_train_batch_size": micro,
        "gradient_accumulation_steps": accum,
        **({"ddp_backend": "gloo"} if world > 1 and not on_gpu else {}),
        "lr_scheduler_type": cfg.lr_scheduler,
        "warmup_steps": cfg.hf_warmup_steps(),  # a float in [0, 1) is a ratio of total steps
        "weight_decay": cfg.weight_decay,
        "adam_beta1": cfg.adam_beta1,
        "adam_beta2": cfg.adam_beta2,
        "bf16": cfg.bf16,
        "gradient_checkpointing": cfg.gradient_checkpointing,
        "logging_steps": cfg.logging_steps,
        "max_length": cfg.max_length,
        "seed": job.seed,
        "data_seed": job.seed,
        "report_to": "none",
        "save_strategy": "steps" if job.save_steps else "no",
        **({"save_steps": job.save_steps} if job.save_steps else {}),
        "push_to_hub": False,
        "disable_tqdm": True,
        "dataloader_num_workers": 0,
        "use_cpu": not on_gpu,
    }


def metrics_callback(log: MetricsLog):
    """A transformers callback copying every training log (those with a loss) into metrics.jsonl."""
    from transformers import TrainerCallback

    class MetricsCallback(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                log.log(state.global_step, **{k: v for k, v in logs.items() if isinstance(v, (int, float))})

    return MetricsCallback()
