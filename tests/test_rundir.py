"""Checked artifacts and resumable in-progress folders of the run directory (workbench/rundir.py)."""

import json

import pytest

from workbench.rundir import INPROGRESS, RunDir, file_checksum


def commit(rd: RunDir, stage: str, files: dict[str, bytes], input_hash="h1", deps=()):
    tmp = rd.begin(stage, input_hash)
    for rel, data in files.items():
        (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp / rel).write_bytes(data)
    return rd.commit(stage, tmp, input_hash=input_hash, config={}, seed=0, counts={}, wall_time_s=0.0,
                     inputs={d: "x" for d in deps})


def corrupt(path):  # same size, other bytes
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def truncate(path):
    path.write_bytes(path.read_bytes()[:-3])


def delete(path):
    path.unlink()


def test_manifest_records_size_and_checksum_of_every_output(tmp_path):
    rd = RunDir(tmp_path)
    manifest = commit(rd, "build", {"positives.parquet": b"abc" * 100, "sub/stats.json": b"{}"})
    assert set(manifest["outputs"]) == {"positives.parquet", "sub/stats.json"}
    out = manifest["outputs"]["positives.parquet"]
    assert out["size"] == 300 and out["checksum"] == file_checksum(tmp_path / "build" / "positives.parquet")
    assert out["checksum"].startswith(("xxh3_128:", "sha256:"))
    assert not (tmp_path / "build" / INPROGRESS).exists()
    assert rd.why_not_done("build", "h1") is None
    assert rd.why_not_done("build", "h2") == "its config or inputs changed"


@pytest.mark.parametrize("damage", [corrupt, truncate, delete])
def test_a_damaged_output_is_named_and_not_cached(tmp_path, damage):
    rd = RunDir(tmp_path)
    commit(rd, "build", {"positives.parquet": b"0123456789" * 50, "pairs.parquet": b"p" * 10})
    target = tmp_path / "build" / "positives.parquet"
    damage(target)
    why = rd.why_not_done("build", "h1")
    assert why is not None and why.startswith(f"{target}: "), why
    assert rd.check_all() == {"build": [why]}


def test_an_engine_log_appended_after_the_stage_keeps_it_cached(tmp_path):
    """vLLM's worker processes may append a shutdown line to engine.log after the manifest is written."""
    rd = RunDir(tmp_path)
    manifest = commit(rd, "generate", {"samples.parquet": b"s" * 20, "engine.log": b"start\n"})
    assert set(manifest["outputs"]) == {"samples.parquet"}
    with open(tmp_path / "generate" / "engine.log", "ab") as f:
        f.write(b"Parent process exited, terminating worker queues\n")
    assert rd.why_not_done("generate", "h1") is None
    old = {"engine.log": {"size": 6, "checksum": "xxh3_128:0"}}  # a manifest from before the change
    from workbench.rundir import output_problems
    assert output_problems(tmp_path / "generate", old) == []


def test_sha256_checksums_of_older_manifests_are_verified(tmp_path):
    rd = RunDir(tmp_path)
    manifest = commit(rd, "prompts", {"prompts.parquet": b"x" * 64})
    path = tmp_path / "prompts" / "prompts.parquet"
    manifest["outputs"]["prompts.parquet"]["checksum"] = file_checksum(path, "sha256")
    (tmp_path / "prompts" / "manifest.json").write_text(json.dumps(manifest))
    assert rd.why_not_done("prompts", "h1") is None
    corrupt(path)
    assert "checksum differs" in rd.why_not_done("prompts", "h1")


def test_dependant_built_from_a_rewritten_input_is_not_cached(tmp_path):
    rd = RunDir(tmp_path)
    commit(rd, "generate", {"samples.parquet": b"first"})
    commit(rd, "verify", {"verified.parquet": b"v"}, deps=["generate"])
    assert rd.why_not_done("verify", "h1") is None
    commit(rd, "generate", {"samples.parquet": b"other"})  # rerun of generate, then killed before verify
    assert rd.why_not_done("verify", "h1") == "its input generate was rewritten since it ran"


def test_in_progress_folder_survives_for_the_same_hash_only(tmp_path):
    rd = RunDir(tmp_path)
    tmp = rd.begin("train/dft", "h1")
    assert tmp == tmp_path / "train" / ".partial-dft"
    (tmp / "checkpoint-1").write_text("step 1")
    rd.abort(tmp)  # a failed or killed attempt keeps its work
    assert rd.begin("train/dft", "h1") == tmp and (tmp / "checkpoint-1").is_file()
    assert json.loads((tmp / INPROGRESS).read_text())["attempts"] == 2
    assert rd.begin("train/dft", "h2") == tmp and not (tmp / "checkpoint-1").exists()  # another config


def test_clean_partial_keeps_only_resumable_folders(tmp_path):
    rd = RunDir(tmp_path)
    keep = rd.begin("generate", "h1")
    stale = rd.begin("train/dft", "old")
    trial = rd.begin("trial/dft/0", "old")  # stage names two folders deep (sweeps)
    unknown = tmp_path / "eval" / ".partial-base"
    unknown.mkdir(parents=True)
    legacy = tmp_path / ".tmp-verify-1234"
    legacy.mkdir()
    removed = rd.clean_partial(keep={"generate": "h1", "train/dft": "new"})
    assert set(removed) == {stale, trial, unknown, legacy}
    assert keep.is_dir()
