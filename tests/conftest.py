"""Fixtures shared by several test modules."""

import subprocess
import sys
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def ray_local():
    """A local 2-CPU Ray for one test module (started per module so modules stay independent)."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory):
    """recipes/smoke.yaml through the real `workbench run`, once per session (test_smoke, test_page):
    (run directory, the finished process with its stdout)."""
    out_dir = tmp_path_factory.mktemp("smoke") / "run"
    workbench = str(Path(sys.executable).parent / "workbench")
    first = subprocess.run([workbench, "run", "recipes/smoke.yaml", "--out", str(out_dir)],
                           cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, timeout=900)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    return out_dir, first


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    """A 2-node Ray cluster on this machine (workbench/local_cluster.py): head `node_a` and worker `node_b`, 2 CPUs
    each (advertised: the machine may have fewer), token auth off, its own ports and temp folders; `node_b` cannot
    see `cluster.hidden` (a folder of its own in a private mount namespace, where `unshare` works). Torn down
    (every process of both nodes) whatever happens; the test process is disconnected from it first."""
    pytest.importorskip("ray")
    from workbench.local_cluster import LocalCluster

    hidden = tmp_path_factory.mktemp("hidden")
    cluster = LocalCluster([{"num_cpus": 2, "resources": {"node_a": 1}},
                            {"num_cpus": 2, "resources": {"node_b": 1}, "hide": [str(hidden)]}])
    cluster.hidden = hidden
    with cluster:
        try:
            yield cluster
        finally:
            import ray

            if ray.is_initialized():
                ray.shutdown()
