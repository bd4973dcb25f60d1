"""Whole-file checksum speed: which hash the run directory's manifests use (workbench/rundir.py).

    .venv/bin/python benchmarks/checksum_speed.py [--mib 1024]

Writes a file of random bytes, reads it once to warm the page cache, then times reading it alone and each
hash over it (4 MiB blocks). The last line is JSON: GB/s per hash and xxh3-128's speed relative to sha256.
"""

import argparse
import hashlib
import json
import os
import tempfile
import time

import xxhash


def rate(path: str, make) -> float:
    h = make()
    t0 = time.perf_counter()
    with open(path, "rb", buffering=0) as f:
        while block := f.read(1 << 22):
            if h is not None:
                h.update(block)
    return os.path.getsize(path) / (time.perf_counter() - t0) / 1e9


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mib", type=int, default=1024, help="Size of the test file in MiB.")
    args = parser.parse_args()
    with tempfile.NamedTemporaryFile(dir=os.environ.get("TMPDIR")) as f:
        for _ in range(args.mib):
            f.write(os.urandom(1 << 20))
        f.flush()
        rate(f.name, lambda: None)  # warm the page cache: measure the hash, not the disk
        result = {"read": rate(f.name, lambda: None), "sha256": rate(f.name, hashlib.sha256),
                  "blake2b": rate(f.name, hashlib.blake2b), "xxh3_128": rate(f.name, xxhash.xxh3_128)}
    for name, gbs in result.items():
        print(f"{name:10s} {gbs:6.2f} GB/s")
    print(json.dumps({"mib": args.mib, **{f"{k}_gb_s": round(v, 2) for k, v in result.items()},
                      "xxh3_over_sha256": round(result["xxh3_128"] / result["sha256"], 2)}))


if __name__ == "__main__":
    main()
