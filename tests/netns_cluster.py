"""A real multi-node Ray cluster on one machine: each node in its own Linux network namespace.

A bridge in the root namespace joins a head, worker namespaces and a client namespace (whose 0-CPU
node hosts the driver: a Ray driver must run on a node), each by a veth pair, with addresses from the
benchmarking range 198.18.0.0/15 (never routed anywhere). The root namespace holds the bridge's
address, so ``deeperbench submit`` reaches the head's Jobs API from here over the link. Every node
runs ``ray start --block`` with its own ``--node-ip-address`` and ``--temp-dir``; the project is
importable in each (this venv, ``PYTHONPATH`` = the repository root). Nodes are ended by pid
(``ip netns pids``), never ``ray stop`` (it ends every Ray process on the machine).

Ray's node health check is shortened (``RAY_health_check_*`` below): a node that stops answering is
declared dead after about ``HEALTH_CHECK_S`` seconds instead of Ray's default 15-30 s.

Needs root (``ip netns``). By hand::

    python -m tests.netns_cluster up [--workers 2] [--name dbc]   # prints the addresses, leaves it running
    python -m tests.netns_cluster down [--name dbc]               # ends its processes, deletes it all
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
GCS_PORT = 6379
DASHBOARD_PORT = 8265
HEALTH = {"RAY_health_check_period_ms": "500", "RAY_health_check_timeout_ms": "1000"}
HEALTH |= {"RAY_health_check_failure_threshold": "3", "RAY_health_check_initial_delay_ms": "1000"}
HEALTH_CHECK_S = 3.0
"""About how long the head waits before it declares a silent node dead, with ``HEALTH``."""


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=30)


def unavailable() -> str | None:
    """Why namespaces cannot be made here (not root, no ``ip``), or None."""
    if shutil.which("ip") is None:
        return "the 'ip' command (iproute2) is not installed"
    if os.geteuid() != 0:
        return "network namespaces need root"
    probe = f"dbprobe{os.getpid() % 100000}"
    made = _ip("netns", "add", probe, check=False)
    _ip("netns", "del", probe, check=False)
    return None if made.returncode == 0 else f"'ip netns add' fails: {made.stderr.strip()}"


def free_subnet(start: int = 20) -> str:
    """The first ``198.18.N`` /24 (N >= start) that no link of this machine uses."""
    used = _ip("-4", "-o", "addr").stdout
    for n in range(start, 255):
        if f" 198.18.{n}." not in used:
            return f"198.18.{n}"
    raise RuntimeError("no free /24 left in 198.18.0.0/16")


def ns_pids(namespace: str) -> list[int]:
    """Every process in ``namespace`` (empty when it does not exist)."""
    done = _ip("netns", "pids", namespace, check=False)
    return [int(p) for p in done.stdout.split()] if done.returncode == 0 else []


def kill_namespace_processes(namespace: str, timeout_s: float = 10.0) -> None:
    """SIGKILL every process in ``namespace``, again until none is left."""
    deadline = time.monotonic() + timeout_s
    while (pids := ns_pids(namespace)) and time.monotonic() < deadline:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)


class NetnsCluster:
    """A head, ``workers`` worker nodes and a client node, each in namespace ``<name>-<node>``.

    Args:
        name: prefix of every namespace and link (at most 6 characters: link names have 15).
        workers: worker nodes, each with ``cpus_per_worker`` CPUs; the head and the client have none.
        subnet: the first three octets of the /24 it uses, within 198.18.0.0/15.
    """

    def __init__(self, name: str = "dbc", workers: int = 2, cpus_per_worker: int = 1, subnet: str | None = None):
        if not 0 < len(name) <= 6 or not name.isalnum():
            raise ValueError(f"name: 1-6 letters or digits, got {name!r}")
        self.name = name
        self.subnet = subnet or free_subnet()
        if not self.subnet.startswith(("198.18.", "198.19.")):
            raise ValueError(f"subnet: must lie in 198.18.0.0/15, got {self.subnet!r}")
        self.cpus_per_worker = cpus_per_worker
        self.nodes = ["head", *(f"w{i + 1}" for i in range(workers)), "client"]
        self.ips = {node: f"{self.subnet}.{10 + i}" for i, node in enumerate(self.nodes)}
        self.bridge_ip = f"{self.subnet}.1"
        self.bridge = f"{name}-br"
        self.state = Path(f"/tmp/{name}-netns-cluster")
        self.procs: dict[str, subprocess.Popen] = {}

    # --- addresses -------------------------------------------------------------------------------

    @property
    def address(self) -> str:
        """The head's GCS, ``HOST:PORT``: what ``deeperbench run --address`` takes."""
        return f"{self.ips['head']}:{GCS_PORT}"

    @property
    def dashboard(self) -> str:
        """The head's Jobs API, reachable from the root namespace over the bridge."""
        return f"http://{self.ips['head']}:{DASHBOARD_PORT}"

    def namespace(self, node: str) -> str:
        return f"{self.name}-{node}"

    def link(self, node: str) -> str:
        """The root-namespace end of ``node``'s veth pair: take it down to cut the node off."""
        return f"{self.name}-{node}"[:15]

    def env(self) -> dict[str, str]:
        """The environment of every node and of drivers in the client namespace."""
        path = f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"
        return os.environ | HEALTH | {"PYTHONPATH": str(ROOT), "RAY_AUTH_MODE": "disabled", "PATH": path}

    # --- network ---------------------------------------------------------------------------------

    def make_network(self) -> None:
        """The bridge (root namespace, holding ``bridge_ip``), and one namespace + veth pair per node."""
        self.remove_network()
        self.state.mkdir(parents=True, exist_ok=True)
        _ip("link", "add", self.bridge, "type", "bridge")
        _ip("addr", "add", f"{self.bridge_ip}/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")
        for node in self.nodes:
            ns, link = self.namespace(node), self.link(node)
            _ip("netns", "add", ns)
            _ip("link", "add", link, "type", "veth", "peer", "name", "eth0", "netns", ns)
            _ip("link", "set", link, "master", self.bridge, "up")
            _ip("-n", ns, "addr", "add", f"{self.ips[node]}/24", "dev", "eth0")
            _ip("-n", ns, "link", "set", "eth0", "up")
            _ip("-n", ns, "link", "set", "lo", "up")
        (self.state / "cluster.json").write_text(json.dumps({"nodes": self.nodes, "bridge": self.bridge}))

    def remove_network(self) -> None:
        """End every process of every namespace by pid, delete the namespaces and the bridge."""
        names = {self.namespace(n) for n in self.nodes}
        names |= {ns for ns in _ip("netns", "list", check=False).stdout.split() if ns.startswith(f"{self.name}-")}
        for ns in sorted(names):
            kill_namespace_processes(ns)
        for proc in self.procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
        self.procs.clear()
        for ns in sorted(names):
            _ip("netns", "del", ns, check=False)
        _ip("link", "del", self.bridge, check=False)

    def cut(self, node: str) -> None:
        """Take ``node``'s link down: nothing reaches it, its processes run on."""
        _ip("link", "set", self.link(node), "down")

    def heal(self, node: str) -> None:
        _ip("link", "set", self.link(node), "up")

    # --- Ray -------------------------------------------------------------------------------------

    def exec_args(self, node: str, *command: str) -> list[str]:
        """``command`` run inside ``node``'s namespace."""
        return ["ip", "netns", "exec", self.namespace(node), *command]

    def start_node(self, node: str) -> None:
        """``ray start --block`` in ``node``'s namespace; the head with the dashboard (Jobs API)."""
        temp = self.state / node
        temp.mkdir(parents=True, exist_ok=True)
        common = ["--node-ip-address", self.ips[node], "--temp-dir", str(temp), "--block", "--disable-usage-stats"]
        if node == "head":
            args = ["--head", "--port", str(GCS_PORT), "--num-cpus", "0", "--include-dashboard", "true"]
            args += ["--dashboard-host", "0.0.0.0", "--dashboard-port", str(DASHBOARD_PORT)]
        else:
            cpus = 0 if node == "client" else self.cpus_per_worker
            args = ["--address", self.address, "--num-cpus", str(cpus)]
        log = open(self.state / f"{node}.log", "ab")  # noqa: SIM115 -- the child keeps it
        self.procs[node] = subprocess.Popen(
            self.exec_args(node, str(BIN / "ray"), "start", *args, *common),
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self.env(),
            start_new_session=True,
        )
        log.close()

    def kill_node(self, node: str) -> None:
        """SIGKILL every process of ``node`` (its namespace stays)."""
        kill_namespace_processes(self.namespace(node))
        if node in self.procs:
            self.procs.pop(node).wait(timeout=10)

    def restart_node(self, node: str, timeout_s: float = 90) -> None:
        self.kill_node(node)
        self.start_node(node)
        self.wait_alive({node}, timeout_s)

    def alive_nodes(self) -> set[str]:
        """The nodes the head counts alive (by address); empty when the head does not answer."""
        script = "import json, ray; ray.init(address='auto', log_to_driver=False, configure_logging=False);"
        script += "print(json.dumps([n['NodeManagerAddress'] for n in ray.nodes() if n['Alive']]))"
        try:
            done = subprocess.run(
                self.exec_args("head", sys.executable, "-c", script),
                capture_output=True,
                text=True,
                timeout=60,
                env=self.env() | {"RAY_ADDRESS": self.address},
            )
        except subprocess.TimeoutExpired:
            return set()
        if done.returncode != 0:
            return set()
        by_ip = {ip: node for node, ip in self.ips.items()}
        return {by_ip[ip] for ip in json.loads(done.stdout.strip().splitlines()[-1]) if ip in by_ip}

    def wait_alive(self, nodes: set[str], timeout_s: float = 120) -> None:
        deadline = time.monotonic() + timeout_s
        while not nodes <= (alive := self.alive_nodes()):
            if time.monotonic() > deadline:
                raise TimeoutError(f"nodes {sorted(nodes - alive)} not alive after {timeout_s:g} s; see {self.state}")
            time.sleep(1)

    def gcs_answers(self) -> bool:
        try:
            socket.create_connection((self.ips["head"], GCS_PORT), timeout=1).close()
            return True
        except OSError:
            return False

    def up(self, timeout_s: float = 180) -> NetnsCluster:
        """Network, then the head, then the other nodes; returns once the head counts them all alive."""
        atexit.register(self.down)
        self.make_network()
        self.start_node("head")
        deadline = time.monotonic() + timeout_s
        while not self.gcs_answers():
            if time.monotonic() > deadline or self.procs["head"].poll() is not None:
                raise TimeoutError(f"the head did not start; see {self.state / 'head.log'}")
            time.sleep(0.5)
        for node in self.nodes[1:]:
            self.start_node(node)
        self.wait_alive(set(self.nodes), max(10.0, deadline - time.monotonic()))
        return self

    def restart(self, timeout_s: float = 180) -> None:
        """Every node ended and started again (a new head is a new cluster: the old nodes cannot rejoin it)."""
        for node in reversed(self.nodes):
            self.kill_node(node)
        self.start_node("head")
        deadline = time.monotonic() + timeout_s
        while not self.gcs_answers():
            if time.monotonic() > deadline:
                raise TimeoutError(f"the head did not start again; see {self.state / 'head.log'}")
            time.sleep(0.5)
        for node in self.nodes[1:]:
            self.start_node(node)
        self.wait_alive(set(self.nodes), max(10.0, deadline - time.monotonic()))

    def down(self) -> None:
        """End every process by pid, delete every namespace and link, and the state folder."""
        self.remove_network()
        shutil.rmtree(self.state, ignore_errors=True)
        atexit.unregister(self.down)

    def leftovers(self) -> list[str]:
        """Namespaces, links and processes of this cluster still present (empty after ``down``)."""
        left = [ns for ns in _ip("netns", "list", check=False).stdout.split() if ns.startswith(f"{self.name}-")]
        links = _ip("-o", "link", check=False).stdout
        left += [f"link {name}" for name in (self.bridge, *map(self.link, self.nodes)) if f" {name}:" in links]
        left += [f"pid {p.pid}" for p in self.procs.values() if p.poll() is None]
        return left


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.netns_cluster", description=__doc__.split("\n")[0])
    parser.add_argument("action", choices=["up", "down"])
    parser.add_argument("--name", default="dbc", help="prefix of the namespaces and links (default dbc)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--cpus-per-worker", type=int, default=1)
    args = parser.parse_args(argv)
    why = unavailable()
    if why:
        print(f"netns_cluster: cannot make namespaces here: {why}", file=sys.stderr)
        return 2
    cluster = NetnsCluster(args.name, args.workers, args.cpus_per_worker)
    if args.action == "down":
        state = cluster.state / "cluster.json"
        if state.exists():
            cluster.nodes = json.loads(state.read_text())["nodes"]
        cluster.down()
        return 0
    cluster.up()
    atexit.unregister(cluster.down)  # left running for the user; `down` ends it
    for node in cluster.nodes:
        print(f"{node:7s} {cluster.ips[node]:15s} ip netns exec {cluster.namespace(node)} ...")
    print(
        f"drive it:  ip netns exec {cluster.namespace('client')} {BIN}/deeperbench run SPEC --address {cluster.address}"
    )
    print(f"submit:    {BIN}/deeperbench submit SPEC --address {cluster.dashboard} --out DIR")
    print(f"end it:    {sys.executable} -m tests.netns_cluster down --name {args.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
