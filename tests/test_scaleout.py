"""Scale-out for real on one CPU machine: submitit's local executor, a local Ray cluster and torchrun (gloo).

Every process binds and connects on loopback only. ``loopback_only`` checks that twice: in this process,
``socket.connect``/``bind`` to any other address raises; and a sampler reads the sockets of this process
and of all its descendants (Ray's GCS, raylet and workers, torchrun's agent and ranks) from /proc every
20 ms, and fails the test on any address outside 127.0.0.0/8 and ::1, including a listener on all interfaces.
One exception, named by the test that needs it: torch's TCPStore (torchrun's master port) has no bind
address and listens on all interfaces; every connection to it is still checked to be on loopback.
"""
from __future__ import annotations

import ipaddress
import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from benchbone.execution.harness import run_grid
from benchbone.planning.grid import GridSpec

pytestmark = pytest.mark.skipif(not Path("/proc/self/net/tcp").exists(), reason="reads sockets from Linux /proc")

METRICS = ["top1", "f1"]
# two cells (two seeds) of a cheap strategy: workers are real processes on a shared 2-core machine
GRID = (["test/tiny-cnn"], ["test/blobs"], ["knn"], METRICS, 2)


def _descendants(root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            pid, rest = stat.read_text().split(" (", 1)
            children.setdefault(int(rest.rsplit(") ", 1)[1].split()[1]), []).append(int(pid))
        except (OSError, IndexError, ValueError):
            continue
    out, todo = {root}, [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in out:
                out.add(child)
                todo.append(child)
    return out


def _ip(hex_addr: str) -> ipaddress._BaseAddress:
    raw = bytes.fromhex(hex_addr)
    return ipaddress.ip_address(b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4)))


def _is_loopback(ip: ipaddress._BaseAddress) -> bool:
    mapped = getattr(ip, "ipv4_mapped", None)
    return (mapped or ip).is_loopback


def tree_sockets(root: int) -> set[tuple]:
    """(kind, state, local ip, local port, remote ip, remote port) of every inet socket of ``root`` and its descendants."""
    inodes = set()
    for pid in _descendants(root):
        try:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        except OSError:
            continue
    found = set()
    for kind in ("tcp", "tcp6", "udp", "udp6"):
        try:
            lines = Path(f"/proc/self/net/{kind}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[9] in inodes:
                (local, port), (remote, remote_port) = fields[1].split(":"), fields[2].split(":")
                found.add((kind, fields[3], _ip(local), int(port, 16), _ip(remote), int(remote_port, 16)))
    return found


def nameservers() -> set:
    """The system resolvers of /etc/resolv.conf: glibc asks them when a host name is not in /etc/hosts."""
    try:
        lines = Path("/etc/resolv.conf").read_text().splitlines()
    except OSError:
        return set()
    return {ipaddress.ip_address(line.split()[1]) for line in lines if line.startswith("nameserver ")
            and len(line.split()) > 1}


class Sockets(set):
    """Sockets seen during a test; ``allow_wildcard_listener(port)`` excuses one listener on all interfaces.

    A UDP socket to a system resolver's port 53 is a host-name lookup (torch's rendezvous resolves this host's
    name; glibc asks the resolver for an IPv6 address that /etc/hosts lacks), not a connection of ours."""

    allowed_ports: set[int]

    def allow_wildcard_listener(self, port: int) -> None:
        self.allowed_ports.add(port)

    def violations(self) -> list[str]:
        bad, resolvers = [], nameservers()
        for kind, state, local, port, remote, remote_port in self:
            if kind.startswith("udp") and remote in resolvers and remote_port == 53:
                continue
            listening = state == "0A" or (kind.startswith("udp") and remote.is_unspecified)
            excused = listening and local.is_unspecified and port in self.allowed_ports
            if (not _is_loopback(local) and not excused) or (
                    not listening and not _is_loopback(remote) and not remote.is_unspecified):
                bad.append(f"{kind} state {state} {local}:{port} -> {remote}:{remote_port}")
        return sorted(bad)


@pytest.fixture
def loopback_only(monkeypatch):
    """Fail the test if this process or any descendant binds or connects outside loopback."""
    for method in ("connect", "connect_ex", "bind"):
        original = getattr(socket.socket, method)

        def guarded(self, address, _original=original, _method=method):
            if self.family in (socket.AF_INET, socket.AF_INET6) and not _is_loopback(ipaddress.ip_address(
                    socket.getaddrinfo(address[0] or "0.0.0.0", None)[0][4][0].split("%")[0])):
                raise AssertionError(f"socket.{_method} to non-loopback {address}")
            return _original(self, address)

        monkeypatch.setattr(socket.socket, method, guarded)
    seen = Sockets()
    seen.allowed_ports = set()
    stop = threading.Event()

    def sample():
        while not stop.wait(0.02):
            seen.update(tree_sockets(os.getpid()))

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    yield seen
    stop.set()
    thread.join()
    seen.update(tree_sockets(os.getpid()))
    assert not seen.violations(), f"sockets outside loopback: {seen.violations()}"


def metric_table(board):
    return board[["backbone", "dataset", "strategy", "seeds", "status", *METRICS, *(f"{m}_std" for m in METRICS)]]


@pytest.fixture(scope="module")
def local_board(tmp_path_factory):
    """The reference: the grid run in this process by the local executor."""
    from benchbone.plugins import get_plugin_manager

    pm = get_plugin_manager(entrypoints=False, extra=["benchbone.testing"])
    out = tmp_path_factory.mktemp("local")
    board = run_grid(GridSpec(*GRID), out=out / "run", pm=pm, cache_dir=out / "cache", quiet=True, echo=False)
    assert list(board["status"]) == ["ok"] and list(board["seeds"]) == [2]
    return metric_table(board)


def _run(benchbone_pm, tmp_path, executor, **options):
    return run_grid(GridSpec(*GRID), out=tmp_path / "run", pm=benchbone_pm, cache_dir=tmp_path / "cache",
                    quiet=True, echo=False, executor=executor, executor_options=options)


@pytest.mark.cluster
def test_submitit_local_executor_gives_the_local_leaderboard(benchbone_pm, tmp_path, local_board, loopback_only,
                                                             monkeypatch):
    pytest.importorskip("submitit")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the jobs' environment: one thread each on two cores
    board = _run(benchbone_pm, tmp_path, "submitit", slurm_cluster="local", slurm_time=5)
    assert metric_table(board).equals(local_board)
    specs = sorted((tmp_path / "run" / "specs").glob("*.json"))
    assert len(specs) == 2 and len(list((tmp_path / "run" / "records").glob("*.json"))) == 2
    spec = json.loads(specs[0].read_text())
    assert spec["plugins"] == {"entrypoints": False, "blocked": [], "extra": ["benchbone.testing"]}
    picked = benchbone_pm.hook.benchbone_pick_device(requested=None)  # what this machine offers
    assert spec["device"] == picked and spec["resources"] == {"gpus": int(picked == "cuda"), "cpus": 1}
    assert len(list((tmp_path / "run" / "submitit").glob("*_result.pkl"))) == 2  # real jobs, one per cell


@pytest.fixture(scope="module")
def local_ray():
    """A one-node Ray cluster on 127.0.0.1 for this module, shut down afterwards."""
    import importlib.util

    from benchbone.execution.executors import start_local_ray

    if importlib.util.find_spec("ray") is None:  # not importorskip: ray must not be imported before the start
        pytest.skip("ray is not installed")

    ray = start_local_ray(num_cpus=2)
    yield ray
    ray.shutdown()


@pytest.mark.cluster
def test_ray_local_cluster_gives_the_local_leaderboard(benchbone_pm, tmp_path, local_board, loopback_only, local_ray):
    nodes = local_ray.nodes()
    assert [n["NodeManagerAddress"] for n in nodes] == ["127.0.0.1"]
    board = _run(benchbone_pm, tmp_path, "ray", cpus_per_cell=1)
    assert metric_table(board).equals(local_board)
    assert any(sock[1] == "0A" for sock in loopback_only)  # the check saw Ray's listeners

    # a lost driver loses nothing: rerun, only the cell whose record is gone runs again
    kept, lost = sorted((tmp_path / "run" / "records").glob("*.json"))
    kept_text = kept.read_text()
    lost.unlink()
    again = _run(benchbone_pm, tmp_path, "ray", cpus_per_cell=1)
    assert metric_table(again).equals(local_board)
    assert kept.read_text() == kept_text and lost.exists()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.cluster
def test_torchrun_gloo_finetune_has_identical_weights_and_one_record(cli, tmp_path, loopback_only):
    planned = cli("run", "-p", "benchbone.testing", "-b", "test/tiny-cnn", "-d", "test/blobs", "-s", "finetune",
                  "--set", "finetune.epochs=2", "--set", "finetune.batch_size=16", "--device", "cpu",
                  "--executor", "specs", "--out", tmp_path / "run")
    assert planned.code == 0, planned.err
    command, = planned.out.splitlines()  # one unfinished cell: "benchbone run-cell /abs/run/specs/<id>.json"
    spec = Path(command.split()[-1])
    assert command.startswith("benchbone run-cell ") and spec.parent == tmp_path / "run" / "specs"
    assert not (tmp_path / "run" / "records").exists()
    assert dict(map(tuple, json.loads(spec.read_text())["cell"]["params"]))["lr"] is None  # the default sweep
    env = {**os.environ, "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1"}  # gloo on lo, not the host name
    port = _free_port()
    loopback_only.allow_wildcard_listener(port)
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
         f"--master_port={port}", "-m", "benchbone.cli", "run-cell", str(spec)],
        capture_output=True, text=True, env=env, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = list((tmp_path / "run" / "records").glob("*.json"))
    assert len(records) == 1 and proc.stderr.count("benchbone: ok ") == 1  # rank 0 alone wrote and reported
    record = json.loads(records[0].read_text())
    info = record["strategy_info"]
    assert record["status"] == "ok" and info["world_size"] == 2
    digests = info["weights_digest_per_rank"]
    assert len(digests) == 2 and digests[0] == digests[1]
    assert info["lr_effective"] == pytest.approx(2 * info["chosen"]["lr"]) and len(info["sweep"]) == 3
    assert info["global_batch_size"] == 32 and info["steps_per_epoch"] == 3  # 86 train images / 2 ranks / 16
    assert not (tmp_path / "run" / "work").exists()
    assert any(sock[1] == "01" for sock in loopback_only)  # the check saw the ranks' gloo connections


def test_executor_errors_are_one_line(cli, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "submitit", None)
    result = cli("run", "-p", "benchbone.testing", "-b", "test/tiny-cnn", "-d", "test/blobs", "-s", "linear-probe",
                 "--executor", "submitit", "--out", tmp_path / "run")
    assert result.code == 2 and "pip install 'benchbone[slurm]'" in result.err and len(result.err.splitlines()) == 1
    result = cli("run", "-p", "benchbone.testing", "-b", "test/tiny-cnn", "-d", "test/blobs", "-s", "linear-probe",
                 "--ray-address", "auto", "--out", tmp_path / "run")
    assert result.code == 2 and "--ray-address applies to --executor ray" in result.err
    result = cli("run-cell", tmp_path / "missing.json")
    assert result.code == 2 and "cannot read spec" in result.err
    assert not (tmp_path / "run").exists()


@pytest.mark.cluster
def test_submitit_requeues_the_same_spec():
    """On preemption or timeout submitit calls ``checkpoint`` and resubmits what it returns."""
    pytest.importorskip("submitit")
    from benchbone.execution.executors import SubmititCell

    task = SubmititCell()
    delayed = task.checkpoint("/runs/q/specs/abc.json")
    assert delayed.function is task and delayed.args == ("/runs/q/specs/abc.json",) and not delayed.kwargs


def test_shards_split_the_shuffled_order_like_distributed_sampler():
    import torch

    from benchbone.api import ImageTensorDataset
    from benchbone.inputs.loading import LoadedImages, iterate_batches
    from benchbone.inputs.splits import whole
    from benchbone.inputs.transforms import Preprocess

    labels = torch.arange(11)  # each image's label is its index, so batches show which images a rank got
    view = whole("train", ImageTensorDataset(torch.zeros(11, 3, 4, 4, dtype=torch.uint8), labels))
    images, prep = LoadedImages(view.dataset), Preprocess((4, 4), 1.0, "bilinear", (0.5,) * 3, (0.25,) * 3)

    def order(shard):
        gen = torch.Generator().manual_seed(7)
        return torch.cat([y for _, y in iterate_batches(images, view, prep, batch_size=4, device="cpu",
                                                         shuffle=gen, shard=shard)]).tolist()

    full, rank0, rank1 = order(None), order((0, 2)), order((1, 2))
    assert len(rank0) == len(rank1) == 6  # 11 padded to 12: every rank takes the same number of steps
    assert rank0 == full[0::2] and rank1 == full[1::2] + full[:1]
    assert sorted(set(rank0 + rank1)) == list(range(11))
