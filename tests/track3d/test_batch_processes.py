"""``track3d batch`` across processes: Ctrl-C on the command (a child process that starts and stops
its own Ray), and a Ray cluster of two nodes on this machine reached with ``--address``."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

# clips and the autouse _offline (no network, no Ray address from the environment) are fixtures
from test_batch import COMMON, GOOD, _batch_json, _by_name, _no_partial, _offline, clips  # noqa: F401
from track3d import batch
from track3d.cli import main


def _ray_processes_of(session: Path) -> list[int]:
    """PIDs of live processes whose command line names this Ray session folder."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if str(session).encode() in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
            except OSError:
                pass
    return pids


@pytest.mark.parametrize("to", ["driver", "group"])
def test_ctrl_c_stops_workers_and_leaves_no_partial_folder(clips, tmp_path, to, request):
    """SIGINT to the command alone, or to its whole process group (what a terminal's Ctrl-C does:
    the Ray processes the command started get it too)."""
    import tempfile

    marker, out = tmp_path / "writing", tmp_path / "out"
    session = Path(tempfile.mkdtemp(prefix="t3d-ray-"))  # short: Ray's socket paths must fit 107 bytes
    env = {**os.environ, batch.TEST_HOOK_ENV: f"pause:{marker}", "RAY_TMPDIR": str(session)}
    command = [sys.executable, "-m", "track3d.cli", "-q", "batch", str(clips / "apple.mp4"), str(clips / "room"),
               "--out", str(out), *COMMON]
    driver = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while not marker.exists():
            assert driver.poll() is None, driver.communicate()
            assert time.monotonic() < deadline, "no worker reached the writing of a result"
            time.sleep(0.2)
        assert any(".tmp-" in p.name for p in out.iterdir())  # a half-written result is there now
        if to == "driver":
            driver.send_signal(signal.SIGINT)
        else:
            os.killpg(driver.pid, signal.SIGINT)
        stdout, stderr = driver.communicate(timeout=120)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
        request.addfinalizer(lambda: shutil.rmtree(session, ignore_errors=True))  # after the Ray check below
    assert driver.returncode == 130, stderr
    assert "interrupted" in stderr and "Traceback" not in stderr
    assert _no_partial(out)
    entries = _by_name(_batch_json(out))
    assert set(entries) == {"apple", "room"}
    for name, entry in entries.items():  # both were writing (2 CPUs): neither finished
        assert entry["status"] == "failed" and entry["error"] == "interrupted before it finished"
        assert not (out / name).exists()
    assert "0 done, 0 skipped, 2 failed (interrupted)" in stdout
    # The local Ray the command started is gone with it (its processes name their session folder).
    deadline = time.monotonic() + 20
    while _ray_processes_of(session) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not _ray_processes_of(session)


@pytest.fixture
def two_nodes():
    """A Ray cluster on this machine: a head node and a second node, one CPU each."""
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    yield cluster
    cluster.shutdown()


def test_cluster_of_two_nodes_via_address(clips, tmp_path, two_nodes):
    import ray

    out = tmp_path / "out"
    four = [clips / "apple.mp4", clips / "cat.mp4", clips / "room", clips / "apple.mp4"]
    listing = tmp_path / "list.txt"
    listing.write_text("\n".join(map(str, four[:3])) + "\n")
    copy = tmp_path / "copy.mp4"
    copy.write_bytes((clips / "cat.mp4").read_bytes())
    assert main(["-q", "batch", str(listing), str(copy), "--out", str(out), "--address", two_nodes.address,
                 *COMMON]) == 0
    assert not ray.is_initialized()  # the driver disconnected; the cluster stays up
    entries = _by_name(_batch_json(out))
    assert set(entries) == {"apple", "cat", "room", "copy"} and {e["status"] for e in entries.values()} == {"done"}
    nodes = {e["node"] for e in entries.values()}
    ray.init(address=two_nodes.address)
    try:
        alive = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
    finally:
        ray.shutdown()
    assert len(alive) == 2 and nodes == alive, (nodes, alive)  # tasks landed on both nodes
    print(json.dumps({name: e["node"][:12] for name, e in sorted(entries.items())}))
