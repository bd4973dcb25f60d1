"""A Ray cluster of several nodes on this one machine: a head and worker nodes, each its own `ray start` (its own
raylet, object store, ports and temp folder), for tests and benchmarks of the multi-node path.

    with LocalCluster([{"num_cpus": 2}, {"num_cpus": 2, "resources": {"node_b": 1}}]) as cluster:
        ray.init(address=cluster.address)        # or a recipe's ray.address: <cluster.address>
        ...                                      # cluster.dashboard: http://127.0.0.1:<port> (ray job submit)

Each node is one `ray start --block` in a session of its own; `stop` (also on any exception inside `with`)
sends the session SIGTERM, then SIGKILL, so nothing it started outlives it, and removes its temp folder.
A node's `num_cpus` is what it advertises, not what the machine has (Ray lets nodes claim more). Token
authentication is off (`RAY_AUTH_MODE=disabled`): a private test cluster reachable only from 127.0.0.1.
A node given `hide: [folder]` runs in a mount namespace of its own with an empty tmpfs over each folder
(needs `unshare`, root): a node that cannot see the run directory, as on a cluster without shared storage.
The same layout by hand (README, "Ray"):

    RAY_AUTH_MODE=disabled ray start --head --port 6390 --num-cpus 2 --resources '{"node_a": 1}' --temp-dir /tmp/rayA
    RAY_AUTH_MODE=disabled ray start --address 127.0.0.1:6390 --num-cpus 2 --resources '{"node_b": 1}'
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Self

RAY = str(Path(sys.executable).parent / "ray")
ENV = {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def can_hide() -> bool:
    """Whether this process may start a node in a mount namespace of its own (`unshare -m`, as root)."""
    if not shutil.which("unshare"):
        return False
    return subprocess.run(["unshare", "--mount", "true"], capture_output=True, check=False).returncode == 0


class LocalCluster:
    """`nodes`: one dict per node, the head first: `num_cpus`, `resources` (custom, e.g. {"node_b": 1}),
    `hide` (folders this node cannot see). `object_store_mb` per node."""

    def __init__(self, nodes: list[dict], object_store_mb: int = 150, dashboard: bool = True,
                 start_timeout_s: float = 120.0):
        self.specs, self.object_store_mb, self.dashboard_on = nodes, object_store_mb, dashboard
        self.timeout = start_timeout_s
        self.procs: list[subprocess.Popen] = []
        self.temp = Path(tempfile.mkdtemp(prefix="wbc", dir="/tmp"))  # short: Ray's socket paths
        self.port, self.dashboard_port = free_port(), free_port()
        self.hidden_ok = can_hide()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def dashboard(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def _args(self, i: int, spec: dict) -> list[str]:
        args = [RAY, "start", "--block", "--disable-usage-stats", "--node-ip-address=127.0.0.1",
                f"--num-cpus={spec.get('num_cpus', 1)}", "--num-gpus=0",
                f"--object-store-memory={self.object_store_mb * 2**20}",
                f"--node-manager-port={free_port()}", f"--object-manager-port={free_port()}",
                f"--dashboard-agent-listen-port={free_port()}", f"--dashboard-agent-grpc-port={free_port()}",
                f"--runtime-env-agent-port={free_port()}", f"--metrics-export-port={free_port()}",
                f"--temp-dir={self.temp / f'n{i}'}"]
        if spec.get("resources"):
            args.append(f"--resources={json.dumps(spec['resources'])}")
        if i == 0:
            args += ["--head", f"--port={self.port}", f"--ray-client-server-port={free_port()}",
                     f"--include-dashboard={str(self.dashboard_on).lower()}", "--dashboard-host=127.0.0.1",
                     f"--dashboard-port={self.dashboard_port}"]
        else:
            args.append(f"--address={self.address}")
        hide = spec.get("hide") or []
        if hide and self.hidden_ok:
            mounts = " && ".join(f"mkdir -p {h} && mount -t tmpfs none {h}" for h in hide)
            return ["unshare", "--mount", "--propagation", "private", "sh", "-c",
                    f"{mounts} && exec \"$@\"", "sh", *args]
        return args

    def start(self) -> Self:
        env = {**os.environ, **ENV}
        try:
            for i, spec in enumerate(self.specs):
                with open(self.temp / f"node{i}.log", "w") as log:  # the node keeps its own copy of the file
                    self.procs.append(subprocess.Popen(self._args(i, spec), stdout=log, stderr=subprocess.STDOUT,
                                                       start_new_session=True, env=env))
                if i == 0:
                    self._wait(lambda: _listening(self.port), "the head's GCS")
            self._wait(lambda: self.alive_nodes() == len(self.specs), f"{len(self.specs)} nodes")
        except BaseException:
            self.stop()
            raise
        return self

    def _wait(self, ready, what: str) -> None:
        deadline = time.time() + self.timeout
        while not ready():
            dead = [i for i, p in enumerate(self.procs) if p.poll() is not None]
            if dead or time.time() > deadline:
                log = (self.temp / f"node{dead[0] if dead else 0}.log").read_text()[-2000:]
                raise RuntimeError(f"local Ray cluster: {what} did not come up "
                                   f"({'node ' + str(dead[0]) + ' exited' if dead else 'timeout'}): {log}")
            time.sleep(0.5)

    def alive_nodes(self) -> int:
        """Alive nodes as the GCS sees them (asked from a short subprocess, so this process stays unconnected)."""
        code = ("import ray, sys; ray.init(address=sys.argv[1], log_to_driver=False); "
                "print(sum(n['Alive'] for n in ray.nodes()))")
        out = subprocess.run([sys.executable, "-c", code, self.address], capture_output=True, text=True,
                             env={**os.environ, **ENV}, timeout=60, check=False)
        try:
            return int(out.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            return 0

    def stop(self) -> None:
        """SIGTERM every node's session (head last), then SIGKILL what is left; remove the temp folder."""
        for proc in reversed(self.procs):
            _signal_group(proc, signal.SIGTERM)
        deadline = time.time() + 10
        for proc in reversed(self.procs):
            try:
                proc.wait(timeout=max(1.0, deadline - time.time()))
            except subprocess.TimeoutExpired:
                pass
            _signal_group(proc, signal.SIGKILL)  # whatever the node started and left behind
            proc.wait()
        self.procs = []
        shutil.rmtree(self.temp, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
