"""The cost of going multi-node, and of healing, on this machine: the smoke recipe's wall time on a 2-node local Ray
cluster over a 1-node one with the same total CPUs, then the recovery time after a training worker is killed.

    .venv/bin/python benchmarks/cluster.py [--recipe recipes/smoke.yaml] [--cpus 4] [--skip-runs]

1. One node (`ray start --head --num-cpus 4`) and two nodes (2 + 2 CPUs, workbench/local_cluster.py): the same
   `workbench run RECIPE --set ray.address=...` into fresh run directories; prints both wall times and the ratio.
2. Healing, on the 2-node cluster, in the second run's directory: train entry 0 again on 2 workers placed
   SPREAD with a checkpoint every 2 steps (`--set` of max_steps so it trains anew); once it has logged step 3,
   SIGKILL its worker on the second node. Prints kill -> new worker group started (its `.attempts.jsonl` row)
   and kill -> first step trained after the restart (its metrics.jsonl row), and the step it resumed from.

Both nodes share this machine's cores, so the ratio measures Ray's multi-node overhead (two raylets and object
stores, cross-node object transfers, placement), not a speed-up. Numbers vary with the machine's load.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from workbench.local_cluster import ENV, LocalCluster

BIN = Path(sys.executable).parent


def run(recipe: str, out: Path, address: str, *sets: str) -> float:
    """`workbench run` on the cluster at `address`; its wall time in seconds (raises with the log's end)."""
    t0 = time.time()
    cmd = [str(BIN / "workbench"), "run", recipe, "--out", str(out), "--set", f"ray.address={address}"]
    for s in sets:
        cmd += ["--set", s]
    proc = subprocess.run(cmd, env={**os.environ, **ENV}, capture_output=True, text=True, check=False)
    if proc.returncode:
        raise SystemExit(f"workbench run failed:\n{(proc.stdout + proc.stderr)[-3000:]}")
    return time.time() - t0


def rows(path: Path) -> list[dict]:
    try:
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except (OSError, ValueError):
        return []


def recover(cluster: LocalCluster, recipe: str, out: Path, entry: str, max_steps: int) -> dict:
    """Kill entry's worker on the second node after step 3; time the group restart and the first step after it."""
    from ray.util.state import list_actors, list_nodes

    second = next(n.node_id for n in list_nodes(address=cluster.dashboard) if "node_b" in n.resources_total)
    sets = ["ray.placement=SPREAD", "ray.max_failures=2", "train[0].num_workers=2", "train[0].cpus_per_worker=1",
            "train[0].save_steps=2", f"train[0].max_steps={max_steps}"]
    cmd = [str(BIN / "workbench"), "run", recipe, "--out", str(out), "--set", f"ray.address={cluster.address}"]
    log_path = out.parent / "healing.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd + [x for s in sets for x in ("--set", s)], env={**os.environ, **ENV},
                                stdout=log, stderr=subprocess.STDOUT)
    partial = out / "train" / f".partial-{entry}"
    killed = restarted = resumed = None
    while proc.poll() is None:
        now = time.time()
        if killed is None and max((r["step"] for r in rows(partial / "metrics.jsonl")), default=0) >= 3:
            alive = list_actors(address=cluster.dashboard, detail=True,
                                filters=[("class_name", "=", "RayTrainWorker"), ("state", "=", "ALIVE")])
            os.kill(next(a.pid for a in alive if a.node_id == second), signal.SIGKILL)
            killed = now
        elif killed and restarted is None and len(attempts := rows(partial / ".attempts.jsonl")) >= 2:
            restarted, step = attempts[-1]["at"], attempts[-1]["resumed_from_step"]
        elif restarted and resumed is None and any(r["step"] == step + 1 for r in rows(partial / "metrics.jsonl")):
            resumed = now
        time.sleep(0.1)
    log = log_path.read_text()
    if proc.returncode or None in (killed, restarted, resumed):
        raise SystemExit(f"the healing run did not go as planned (rc {proc.returncode}, killed {killed}, "
                         f"restarted {restarted}, resumed {resumed}):\n{log[-3000:]}")
    return {"kill_to_restart_s": round(restarted - killed, 1), "kill_to_first_step_s": round(resumed - killed, 1),
            "resumed_from_step": step}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", default="recipes/smoke.yaml")
    ap.add_argument("--cpus", type=int, default=4, help="total CPUs the cluster advertises (split over 2 nodes)")
    ap.add_argument("--entry", default="dft", help="train[0]'s name in the recipe (the entry killed)")
    ap.add_argument("--max-steps", type=int, default=12)
    ap.add_argument("--skip-runs", action="store_true", help="only the healing measurement")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="wb-cluster-bench-"))
    result = {"recipe": args.recipe, "cpus": args.cpus}
    if not args.skip_runs:
        with LocalCluster([{"num_cpus": args.cpus}]) as one:
            result["one_node_s"] = round(run(args.recipe, work / "one", one.address), 1)
    half = args.cpus // 2
    with LocalCluster([{"num_cpus": args.cpus - half, "resources": {"node_a": 1}},
                       {"num_cpus": half, "resources": {"node_b": 1}}]) as two:
        result["two_nodes_s"] = round(run(args.recipe, work / "two", two.address), 1)
        if "one_node_s" in result:
            result["ratio"] = round(result["two_nodes_s"] / result["one_node_s"], 3)
        result |= recover(two, args.recipe, work / "two", args.entry, args.max_steps)
    print(f"smoke wall time: one node {result.get('one_node_s', '-')} s, two nodes {result['two_nodes_s']} s "
          f"(ratio {result.get('ratio', '-')}); a killed worker: group restarted {result['kill_to_restart_s']} s and "
          f"training resumed {result['kill_to_first_step_s']} s after the kill (from step {result['resumed_from_step']})")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
