"""Average@4 of the toy base model on each toy benchmark (HF generate, temperature 1.0).

Run: .venv/bin/python benchmarks/toy_base.py [--n 200] [--k 4] [--model toy:arith] [--threads 2]
`toy:arith` is the shipped model (workbench/assets/toy-arith); `--model` takes any folder, e.g. a
rebuilt candidate. Last line: one JSON object
{"model", "path", "resolve_s", "k", "<benchmark>": {"avg_at_k", "pass_at_k", "mixed", "n", "seconds"}, ...}.

Measured 2026-11-28 for the shipped model (fingerprint 413d36d475365f19), --n 500 --threads 1:
toy-id 26.7%, toy-long 3.5%, toy-big 7.3% Average@4 (pass@4 63.2%, 11.6%, 17.0%).
"""

from __future__ import annotations

import argparse
import json
import time


def grade(response: str, gold: str) -> bool:
    """math-verify on the response's boxed answer against the gold answer."""
    from math_verify import parse, verify

    try:
        return bool(verify(parse("$" + gold + "$"), parse(response)))
    except Exception:
        return False


def sample(model, tokenizer, prompts: list[str], k: int, max_new_tokens: int, seed: int) -> list[list[str]]:
    """k responses per prompt at temperature 1.0 (left-padded batches)."""
    import torch

    torch.manual_seed(seed)
    tokenizer.padding_side = "left"
    out = []
    for i in range(0, len(prompts), 64):
        chunk = prompts[i : i + 64]
        enc = tokenizer(chunk, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.no_grad():
            gen = model.generate(**enc, do_sample=True, temperature=1.0, top_p=1.0, top_k=0,
                                 max_new_tokens=max_new_tokens, num_return_sequences=k,
                                 pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
        texts = tokenizer.batch_decode(gen[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
        out += [texts[j * k : (j + 1) * k] for j in range(len(chunk))]
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="toy:arith")
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--max-new-tokens", type=int, default=96)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from data_gen.toy import TOY_BENCHMARKS, toy_benchmark
    from workbench.models import resolve_model, toy_template
    from workbench.template import render_prompt

    torch.set_num_threads(args.threads)
    t0 = time.time()
    path = resolve_model(args.model)
    result = {"model": args.model, "path": path, "resolve_s": round(time.time() - t0, 1), "k": args.k}
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    tokenizer = AutoTokenizer.from_pretrained(path)
    for name in TOY_BENCHMARKS:
        t1 = time.time()
        df = toy_benchmark(name, args.n)
        prompts = [render_prompt(tokenizer, p, toy_template()) for p in df["problem"]]
        responses = sample(model, tokenizer, prompts, args.k, args.max_new_tokens, seed=0)
        correct = [[grade(r, gold) for r in rs] for rs, gold in zip(responses, df["answer"])]
        avg = sum(map(sum, correct)) / (len(correct) * args.k)
        pass_k = sum(any(c) for c in correct) / len(correct)
        mixed = sum(any(c) and not all(c) for c in correct) / len(correct)
        result[name] = {"avg_at_k": round(avg, 4), "pass_at_k": round(pass_k, 4), "mixed": round(mixed, 4),
                        "n": len(correct), "seconds": round(time.time() - t1, 1)}
        print(name, result[name], "example:", repr(prompts[0] + responses[0][0]), flush=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
