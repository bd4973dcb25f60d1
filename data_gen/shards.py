"""Sampling shards: the unit in which a long sampling job is saved, so a killed run resumes where it stopped.

`sample(..., shards=ShardStore(folder))` saves the completions of each contiguous slice of prompts as
`shard-<k>-<start>-<end>.parquet` in the stage's in-progress folder (see workbench/rundir.py) the moment
the slice is done, and loads the slices already there instead of sampling them again. A shard is written
to a temporary name and renamed, so a kill mid-write leaves no half shard. The slice bounds are part of the
name: a shard of another slicing is never mistaken for this one (the stage's hash changes with the config
anyway, which wipes the folder).
"""

from __future__ import annotations

import os
from pathlib import Path

import polars as pl

SHARD_SCHEMA = {"prompt": pl.Int64, "sample_idx": pl.Int64, "text": pl.String, "num_tokens": pl.Int64,
                "finish_reason": pl.String}


class ShardStore:
    """Completed shards of one sampling job in `folder`; counts what was reused and what was sampled."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.total = 0
        self.reused = 0

    def path(self, k: int, start: int, end: int) -> Path:
        return self.folder / f"shard-{k:05d}-{start}-{end}.parquet"

    def load(self, k: int, start: int, end: int) -> list[list] | None:
        """The completions of prompts start..end saved by an earlier run, or None."""
        from data_gen.samplers import Completion

        path = self.path(k, start, end)
        if not path.is_file():
            return None
        try:
            df = pl.read_parquet(path)
        except Exception:  # noqa: BLE001 - an unreadable shard is sampled again
            return None
        rows: list[list] = [[] for _ in range(end - start)]
        for r in df.sort("prompt", "sample_idx").iter_rows(named=True):
            rows[r["prompt"]].append(Completion(r["text"], r["num_tokens"], r["finish_reason"]))
        if any(not row for row in rows):
            return None
        self.reused += 1
        return rows

    def save(self, k: int, start: int, end: int, completions: list[list]) -> None:
        """Write one finished shard atomically (temporary name, then rename)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        data = {key: [] for key in SHARD_SCHEMA}
        for i, comps in enumerate(completions):
            for j, c in enumerate(comps):
                for key, value in zip(SHARD_SCHEMA, (i, j, c.text, c.num_tokens, c.finish_reason)):
                    data[key].append(value)
        path = self.path(k, start, end)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        pl.DataFrame(data, schema=SHARD_SCHEMA).write_parquet(tmp)
        os.replace(tmp, path)
