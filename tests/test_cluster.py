"""The pipeline on a 2-node Ray cluster on this machine (tests/conftest.py `ray_cluster`): the run-directory check
refuses a node that cannot see the run directory in one line naming it; a `ray job submit` of a small smoke recipe
places engine actors, verification tasks and the 2-worker training group on both nodes (Ray's state API says
where each ran), heals a training worker killed mid-stage within the same run (the manifest records the restart
and the step it resumed from), and ends with the same samples, bit-identical weights and the same table as the
same recipe on one node with the same CPUs."""

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import polars as pl
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
ENV = {**os.environ, "RAY_AUTH_MODE": "disabled"}
# what a working-dir upload leaves out (Ray also honours .gitignore): the venv, runs, caches
EXCLUDES = [".venv", "runs", ".git", "*.egg-info", "__pycache__", ".pytest_cache", ".ruff_cache", "build", ".whl"]


def cluster_recipe(tmp_path: Path) -> Path:
    """recipes/smoke.yaml, smaller: 8 prompts on 2 engine actors, 4 verification chunks of 2 CPUs each (a whole
    node: both nodes grade), one DFT entry on 2 workers placed SPREAD with a checkpoint every 2 of its 16 steps,
    one benchmark."""
    data = yaml.safe_load((REPO / "recipes" / "smoke.yaml").read_text())
    data["run"]["name"] = "cluster"
    data["prompts"]["max_prompts"] = 8
    data["generate"]["num_actors"] = 2
    data["verify"].update(chunk_size=8, num_cpus_per_task=2)
    data["train"] = [{"name": "dft", "algorithm": "dft", "learning_rate": 1.0e-3, "batch_size": 8,
                      "per_device_batch_size": 4, "max_steps": 16, "max_length": 192, "num_workers": 2,
                      "cpus_per_worker": 1, "save_steps": 2}]
    data["evaluate"].update(benchmarks=["toy-id"], limit=8, k=2)
    data["report"] = {"plot": False}
    data["ray"] = {"placement": "SPREAD", "max_failures": 2}
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def node_ids(cluster) -> dict[str, str]:
    """{"node_a": id, "node_b": id} from the state API."""
    from ray.util.state import list_nodes

    return {r: n.node_id for n in list_nodes(address=cluster.dashboard)
            for r in n.resources_total if r in ("node_a", "node_b")}


def steps(path: Path) -> list[int]:
    try:
        return [json.loads(line)["step"] for line in path.read_text().splitlines() if line.strip()]
    except (OSError, ValueError, KeyError):
        return []


def test_the_run_directory_check_names_the_node_that_cannot_see_it(ray_cluster, tmp_path):
    if not ray_cluster.hidden_ok:
        pytest.skip("no private mount namespace here (unshare): node_b sees every folder")
    run = subprocess.run([str(BIN / "workbench"), "run", str(cluster_recipe(tmp_path)), "--out",
                          str(ray_cluster.hidden / "run"), "--set", f"ray.address={ray_cluster.address}"],
                         env=ENV, capture_output=True, text=True, timeout=300, check=False)
    assert run.returncode != 0
    (last,) = [line for line in (run.stdout + run.stderr).splitlines() if line.startswith("error:")]
    node_b = node_ids(ray_cluster)["node_b"]
    assert "is not shared with Ray node " in last and f"/{node_b[:8]} (" in last, last
    assert str(ray_cluster.hidden / "run") in last


def kill_a_worker_on(node: str, cluster) -> int:
    """SIGKILL the alive Ray Train worker on `node`; return its pid."""
    from ray.util.state import list_actors

    alive = list_actors(address=cluster.dashboard, detail=True,
                        filters=[("class_name", "=", "RayTrainWorker"), ("state", "=", "ALIVE")])
    (worker,) = [a for a in alive if a.node_id == node]
    os.kill(worker.pid, signal.SIGKILL)
    return worker.pid


@pytest.mark.slow
def test_a_ray_job_spreads_the_pipeline_heals_a_killed_worker_and_matches_one_node(ray_cluster, tmp_path):
    recipe, two, one = cluster_recipe(tmp_path), tmp_path / "two-nodes", tmp_path / "one-node"
    job, started = f"wb-{uuid.uuid4().hex[:6]}", time.time()
    submit = subprocess.run(
        [str(BIN / "ray"), "job", "submit", f"--address={ray_cluster.dashboard}", f"--submission-id={job}",
         "--working-dir", str(REPO), "--runtime-env-json", json.dumps({"excludes": EXCLUDES}), "--no-wait", "--",
         str(BIN / "workbench"), "run", str(recipe), "--out", str(two), "--set", "ray.address=auto"],
        cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300, check=False)
    assert submit.returncode == 0, submit.stdout + submit.stderr
    # meanwhile, the same recipe on one node with the same 4 CPUs, uninterrupted (a local Ray of its own)
    local_log = tmp_path / "one-node.log"
    with open(local_log, "w") as log:
        local = subprocess.Popen([str(BIN / "workbench"), "run", str(recipe), "--out", str(one), "--set",
                                  "ray.num_cpus=4"], env=ENV, stdout=log, stderr=subprocess.STDOUT)
    try:
        two_nodes_part(ray_cluster, job, two, recipe)
        local.wait(timeout=max(60.0, 1200 - (time.time() - started)))
    finally:
        if local.poll() is None:
            local.kill()
    assert local.returncode == 0, local_log.read_text()[-4000:]
    compare(one, two)


def two_nodes_part(ray_cluster, job, two, recipe):
    """The job: kill a training worker on node_b mid-stage, then check the job, the healing and the placement."""
    from ray.job_submission import JobStatus, JobSubmissionClient
    from ray.util.state import list_actors, list_tasks

    client, nodes = JobSubmissionClient(ray_cluster.dashboard), node_ids(ray_cluster)
    metrics, killed = two / "train" / ".partial-dft" / "metrics.jsonl", None
    deadline = time.time() + 1200
    while (status := client.get_job_status(job)) not in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED):
        if killed is None and max(steps(metrics), default=0) >= 3:  # after the step-2 checkpoint, mid-stage
            killed = kill_a_worker_on(nodes["node_b"], ray_cluster)
        assert time.time() < deadline, "the job did not finish"
        time.sleep(0.2)
    logs = subprocess.run([str(BIN / "ray"), "job", "logs", f"--address={ray_cluster.dashboard}", job],
                          env=ENV, capture_output=True, text=True, timeout=120, check=False).stdout
    assert status == JobStatus.SUCCEEDED, logs[-4000:]
    assert killed is not None, "the training group finished before a worker could be killed"
    assert "✓ train/dft" in logs and "✓ report" in logs, logs[-4000:]  # the run's own log, in `ray job logs`

    # healed inside the run: one restart, resumed from the checkpoint before the kill, each step logged once
    counts = json.loads((two / "train" / "dft" / "manifest.json").read_text())["counts"]
    assert counts["restarts"] == 1 and len(counts["attempts"]) == 2, counts
    assert counts["attempts"][1]["resumed_from_step"] == counts["resumed_from_step"] >= 2
    assert steps(two / "train" / "dft" / "metrics.jsonl") == list(range(1, 17))
    check = subprocess.run([str(BIN / "workbench"), "check", str(recipe), "--out", str(two)], env=ENV,
                           capture_output=True, text=True, timeout=300, check=False)
    assert check.returncode == 0, check.stdout + check.stderr  # every stage complete and intact

    # where things ran, from Ray's state API
    def where(items, keep):
        return {nodes_by_id[i.node_id] for i in items if keep(i)}

    nodes_by_id = {v: k for k, v in nodes.items()}
    actors = list_actors(address=ray_cluster.dashboard, detail=True, limit=1000)
    tasks = list_tasks(address=ray_cluster.dashboard, detail=True, limit=10000)
    assert where(actors, lambda a: (a.name or "").startswith("generate: engine ")) == {"node_a", "node_b"}
    assert len(where(actors, lambda a: (a.name or "").startswith("evaluate dft: engine "))) == 1  # one actor
    assert where(tasks, lambda t: t.name.endswith("grade_chunk") and t.node_id) == {"node_a", "node_b"}
    assert where(actors, lambda a: a.class_name == "RayTrainWorker") == {"node_a", "node_b"}
    assert any(t.name == "train/dft (worker group)" for t in tasks)


def compare(one, two):
    """The two runs' samples, grades, data sets, weights, evaluations and table: equal."""
    for stage in ("generate", "verify", "build"):
        for f in sorted((one / stage).glob("*.parquet")):
            assert pl.read_parquet(f).equals(pl.read_parquet(two / stage / f.name)), f
    weights = "train/dft/model/model.safetensors"
    assert (one / weights).read_bytes() == (two / weights).read_bytes()  # healed == uninterrupted, bit for bit
    for f in sorted((one / "eval").glob("*/*.parquet")):
        assert pl.read_parquet(f).equals(pl.read_parquet(two / f.relative_to(one))), f
    table = "report/table2.csv"  # the accuracy table (table2.md also shows wall times)
    assert pl.read_csv(one / table).equals(pl.read_csv(two / table))
