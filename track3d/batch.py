"""Many videos, many machines: ``track3d batch`` on Ray.

``run_batch(["videos/"], "out/")`` (or ``track3d batch videos/ --out out/``)
runs :func:`track3d.reconstruct` (or, with ``task="track"``, :func:`track3d.track`)
on every input, each as one Ray task, and writes one result folder per input,
``out/<name>/``, exactly as ``track3d reconstruct`` (``track3d track``) would.
Ray does the scheduling (CPUs and GPUs per task, on one machine or a cluster
reached with ``address``) and retries tasks whose worker process died (killed,
out of memory); this module decides what to run and records what happened.

- **Inputs**: video files, folders (the videos in them, searched recursively,
  and every folder of images among them as one video; a folder that holds
  images itself is one video) and text files (``.txt``, ``.lst``, ``.list``)
  listing such paths, one a line (``#`` starts a comment; relative paths are
  relative to the list file). :func:`collect_inputs`.
- **Names**: ``out/<stem>/``; inputs that share a stem get ``<stem>-<hash>``
  (eight hex digits of the absolute path), and an input met before keeps the
  name ``out/batch.json`` gave it. :func:`assign_names`.
- **Resuming**: a complete result folder (written atomically, so a folder is
  complete or absent) made from the same input is skipped; ``overwrite``
  redoes it. Leftover temporary folders of killed workers are removed.
- **Failures are data**: bad input (a corrupt or truncated file) fails its
  task with the one-line message ``track3d reconstruct`` gives, and the batch
  goes on; a worker that dies is retried ``retries`` times by Ray; a task
  running longer than ``timeout`` seconds is stopped (inside the worker, and by
  force from the driver when it does not stop) and recorded.
- **Record**: ``out/batch.json``, rewritten as tasks finish (:data:`BATCH_FILE`)::

      {"engine": "ray", "ray_version": "2.x", "task": "reconstruct",
       "inputs": [{"input", "out", "status": "done"|"skipped"|"failed", "error",
                   "seconds", "frames", "registered_frames", "node", "threads"}, ...]}

  ``node`` is the Ray node id the task ran on and ``threads`` the torch threads it used
  (null when it did not run).

Threads per task follow the task's CPU share: ``OMP_NUM_THREADS`` (and MKL,
OpenBLAS) in the worker's environment, ``torch.set_num_threads`` and
``cv2.setNumThreads`` inside it, and COLMAP's mapper threads
(:attr:`~track3d.reconstruction.ReconstructOptions.threads`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import re
import shutil
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from track3d import io
from track3d.errors import OutputError, Track3DError, USER_ERRORS

logger = logging.getLogger(__name__)

TASKS = ("reconstruct", "track")
"""What ``track3d batch --task`` runs on each input."""

BATCH_FILE = "batch.json"
"""The batch record, in the output folder."""

LIST_SUFFIXES = (".txt", ".lst", ".list")
"""A file input with one of these suffixes is a list of paths, one a line."""

VIDEO_SUFFIXES = (".mp4", ".mov", ".avi", ".webm", ".mkv", ".gif", ".m4v", ".mpg", ".mpeg", ".ts", ".wmv", ".flv")
"""Files taken as videos when a folder is searched (any file named directly is tried as a video)."""

STATUSES = ("done", "skipped", "failed")
"""Values of ``status`` in :data:`BATCH_FILE`."""

TEST_HOOK_ENV = "TRACK3D_BATCH_TEST_HOOK"
"""For tests only: ``"kill:MARKER"`` makes the first worker that starts writing a result kill its own
process (SIGKILL) once, after creating the file MARKER; ``"pause:MARKER"`` makes every worker create
MARKER when it starts writing, then sleep there (to interrupt or time out a batch mid-write);
``"stuck:MARKER"`` blocks the worker's own timer from the task's start (creating MARKER then), then
sleeps when writing: only the driver can stop it."""

FORCE_GRACE_S = 30.0
"""Seconds past ``timeout`` after which the driver stops a task by force (killing its worker), when the
worker's own timer has not stopped it (e.g. stuck in native code). Counted from when the task was handed
to Ray, which is when it starts: the driver hands out no more tasks than the cluster can run at once."""


# --------------------------------------------------------------------------
# Inputs and names
# --------------------------------------------------------------------------


def _has_images(folder: Path) -> bool:
    from track3d.video import IMAGE_EXTENSIONS

    try:
        return any(p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".") and p.is_file()
                   for p in folder.iterdir())
    except OSError:
        return False


def _search(folder: Path) -> list[Path]:
    """Videos under ``folder``: video files, and folders of images (each one video), sorted."""
    if _has_images(folder):
        return [folder]
    found = []
    for entry in sorted(folder.iterdir(), key=lambda p: p.name):
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            found += _search(entry)
        elif entry.is_file() and entry.suffix.lower() in VIDEO_SUFFIXES:
            found.append(entry)
    return found


def _read_list(path: Path) -> list[Path]:
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise Track3DError(f"cannot read the list of inputs {path}: {exc}") from None
    entries = []
    for line in lines:
        line = line.split("#", 1)[0].strip()
        if line:
            entry = Path(line).expanduser()
            entries.append(entry if entry.is_absolute() else path.parent / entry)
    return entries


def collect_inputs(paths: Sequence[str | Path]) -> list[Path]:
    """The videos named by ``paths``, absolute, in order, each once.

    Args:
        paths: video files (any name: they are tried as videos), folders
            (searched recursively for files ending in :data:`VIDEO_SUFFIXES`
            and for folders of images; a folder holding images is itself one
            video) and list files (:data:`LIST_SUFFIXES`: one path a line,
            ``#`` comments, relative to the list's folder; entries are
            expanded the same way, except that a listed path that does not
            exist is kept, so that its task fails and is recorded).

    Returns:
        Absolute paths of videos (files or image folders).

    Raises:
        Track3DError: a path given directly does not exist, a list cannot be
            read, or nothing at all was found.
    """
    found: list[Path] = []

    def add(path: Path, listed: bool) -> None:
        if path.is_dir():
            found.extend(_search(path))
        elif path.is_file() and path.suffix.lower() in LIST_SUFFIXES and not listed:
            for entry in _read_list(path):
                add(entry, True)
        elif path.exists() or listed:
            found.append(path)
        else:
            raise Track3DError(f"the input {path} does not exist; check the path")

    for p in paths:
        add(Path(p).expanduser(), False)
    unique = list(dict.fromkeys(Path(os.path.abspath(p)) for p in found))
    if not unique:
        raise Track3DError(f"no video found in {', '.join(map(str, paths))} (video files ending in "
                           f"{', '.join(VIDEO_SUFFIXES)}, or folders of images)")
    return unique


def _stem(path: Path) -> str:
    name = path.name if path.is_dir() else path.stem
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "video"
    return name[:100]


def _short_hash(path: Path) -> str:
    return hashlib.sha1(str(path).encode()).hexdigest()[:8]


def _result_source(folder: Path) -> str | None:
    """The input a result folder was made from (its ``summary.json``), or None."""
    try:
        return json.loads((folder / "summary.json").read_text()).get("source")
    except (OSError, ValueError, AttributeError):
        return None


def _previous_names(out_dir: Path) -> dict[str, str]:
    """input -> name, from an earlier ``batch.json`` in ``out_dir`` (empty when there is none)."""
    try:
        record = json.loads((out_dir / BATCH_FILE).read_text())
        return {e["input"]: Path(e["out"]).name for e in record.get("inputs", [])
                if isinstance(e, dict) and e.get("input") and e.get("out")}
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return {}


def assign_names(inputs: Sequence[Path], out_dir: str | Path) -> list[str]:
    """The result folder name of each input: unique in the batch and stable across runs.

    An input named in an earlier ``out_dir/batch.json`` keeps its name. Others
    get their file (or folder) name without suffix, made safe for a file
    name; when another input of the batch has the same one, or ``out_dir``
    already holds a result of that name made from another input, the name is
    followed by ``-`` and eight hex digits of a hash of the input's absolute path.

    Args:
        inputs: absolute paths (:func:`collect_inputs`).
        out_dir: the batch's output folder.

    Returns:
        One name per input, in order.
    """
    out_dir = Path(out_dir)
    previous = _previous_names(out_dir)
    stems = [_stem(p) for p in inputs]
    counts: dict[str, int] = {}
    for s in stems:
        counts[s] = counts.get(s, 0) + 1
    taken = {previous[str(p)] for p in inputs if str(p) in previous}
    names = []
    for path, stem in zip(inputs, stems):
        name = previous.get(str(path))
        if name is None:
            name = stem
            source = _result_source(out_dir / stem)
            clash = counts[stem] > 1 or name in taken or (source is not None and source != str(path))
            if clash:
                name = f"{stem}-{_short_hash(path)}"
        taken.add(name)
        names.append(name)
    return names


# --------------------------------------------------------------------------
# Results on disk
# --------------------------------------------------------------------------


def _required_files(task: str) -> tuple[str, ...]:
    if task == "reconstruct":
        from track3d.reconstruction import RESULT_FILE, SUMMARY_FILE

        return (RESULT_FILE, SUMMARY_FILE)
    return (io.TRACKS_FILE, "summary.json")


def existing_result(folder: Path, task: str, source: Path) -> dict | None:
    """The summary of a complete result of ``task`` made from ``source`` in ``folder``, else None.

    Result folders are written atomically, so a folder holding the task's
    files (``reconstruction.npz`` and ``summary.json``; ``tracks.npz`` and
    ``summary.json``) is complete.
    """
    if not all((folder / name).is_file() for name in _required_files(task)):
        return None
    try:
        summary = json.loads((folder / "summary.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(summary, dict) or summary.get("source") != str(source):
        return None
    return summary


def _temporary_folders(out_dir: Path, name: str) -> list[Path]:
    prefix = f".{name}.tmp-"
    try:
        return [p for p in out_dir.iterdir() if p.name.startswith(prefix) and p.is_dir()]
    except OSError:
        return []


def remove_partial(out_dir: Path, names: Sequence[str]) -> int:
    """Delete the temporary folders (``.<name>.tmp-*``) that workers writing these results left
    behind when they were killed; returns how many were removed."""
    removed = 0
    for name in names:
        for tmp in _temporary_folders(out_dir, name):
            shutil.rmtree(tmp, ignore_errors=True)
            removed += 1
    return removed


# --------------------------------------------------------------------------
# The worker
# --------------------------------------------------------------------------


class TaskTimeout(BaseException):
    """Raised inside a worker when its task runs past ``timeout`` (a BaseException, so that no
    ``except Exception`` in library code swallows it; the atomic writer cleans up on it)."""


def _test_hook(stage: str = "write") -> None:
    """See :data:`TEST_HOOK_ENV`; ``stage``: ``"start"`` (the task's timer just set) or ``"write"``."""
    spec = os.environ.get(TEST_HOOK_ENV)
    if not spec or ":" not in spec:
        return
    action, marker = spec.split(":", 1)
    if stage == "start":
        if action == "stuck":  # as native code that never returns to Python: the timer does nothing
            signal.signal(signal.SIGALRM, signal.SIG_IGN)
            Path(marker).write_text(str(os.getpid()))
        return
    if action == "kill":
        try:
            fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        os.kill(os.getpid(), signal.SIGKILL)
    elif action in ("pause", "stuck"):
        if action == "pause":
            Path(marker).write_text(str(os.getpid()))
        while True:
            time.sleep(0.1)


def limit_threads(threads: int) -> None:
    """Make this process's numeric libraries use ``threads`` threads (torch, OpenCV, OpenMP)."""
    import cv2
    import torch

    threads = max(1, int(threads))
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)
    torch.set_num_threads(threads)
    cv2.setNumThreads(threads)


def _node_id() -> str | None:
    try:
        import ray

        return ray.get_runtime_context().get_node_id() if ray.is_initialized() else None
    except Exception:  # noqa: BLE001 - the node id is informative only
        return None


def run_task(task: str, source: str, out: str, options: dict, *, viz: bool = True, overwrite: bool = False,
             threads: int = 1, timeout: float | None = None) -> dict:
    """Run one input of a batch, in the current process (what each Ray task calls).

    Args:
        task: ``"reconstruct"`` or ``"track"``.
        source: the video (absolute path).
        out: its result folder (written atomically).
        options: fields of :class:`~track3d.reconstruction.ReconstructOptions`
            (or :class:`~track3d.tracking.TrackOptions` for ``track``).
        viz: ``reconstruct``: also write ``recording.rrd`` and ``overlay.mp4``;
            ``track``: write ``overlay.mp4``.
        overwrite: replace an existing result folder.
        threads: threads of torch, OpenCV and OpenMP in this process.
        timeout: seconds after which the task stops itself (None: never).

    Returns:
        The task's record: ``status`` (``"done"`` or ``"failed"``), ``error``
        (the one-line message ``track3d reconstruct`` would print after
        ``track3d: error:``, or None), ``seconds``, ``frames``,
        ``registered_frames`` (None for ``track``), ``node`` and ``threads``. Bad input is
        a failed record, not an exception; only the death of the process is
        left to Ray (to retry).
    """
    t0 = time.perf_counter()
    record = {"status": "failed", "error": None, "seconds": None, "frames": None, "registered_frames": None,
              "node": _node_id()}
    limit_threads(threads)
    import torch

    record["threads"] = torch.get_num_threads()
    timer = timeout is not None and timeout > 0 and threading.current_thread() is threading.main_thread()
    if timer:
        def expire(signum, frame):
            raise TaskTimeout

        previous = signal.signal(signal.SIGALRM, expire)
        signal.setitimer(signal.ITIMER_REAL, float(timeout))
    _test_hook("start")
    try:
        if task == "reconstruct":
            from track3d.reconstruction import ReconstructOptions, reconstruct

            opts = dataclasses.replace(ReconstructOptions(**options), threads=max(1, int(threads)))
            result = reconstruct(source, opts)

            def on_progress(stage: str, done: int, total: int) -> None:
                if stage == "write" and done >= 1:
                    _test_hook()

            result.save(out, overwrite=overwrite, viz=viz, progress=on_progress)
            record.update(frames=int(result.summary["frames"]),
                          registered_frames=int(result.summary["registered_frames"]))
        elif task == "track":
            from track3d.tracking import TrackOptions, save_track_folder, track

            opts = TrackOptions(**options)
            result = track(source, opts)
            summary = save_track_folder(result, out, opts, overlay=viz, overwrite=overwrite,
                                        on_write=lambda name: _test_hook())
            record.update(frames=summary["frames"])
        else:
            raise Track3DError(f"unknown task {task!r}; tasks: {', '.join(TASKS)}")
        record["status"] = "done"
    except USER_ERRORS as exc:
        record["error"] = _one_line(str(exc))
    except TaskTimeout:
        record["error"] = f"timed out after {timeout:g} s (--timeout)"
    except MemoryError:
        record["error"] = ("out of memory; try --online, fewer frames (--end/--stride), a smaller --grid or "
                           "--max-side, or more memory per task (fewer tasks at once: --cpus-per-task)")
    except Exception as exc:  # noqa: BLE001 - a bug on one input must not stop the batch: recorded
        logger.exception("%s failed on %s", task, source)
        record["error"] = _one_line(f"internal error ({type(exc).__name__}: {exc}); please report it")
    finally:
        if timer:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
    record["seconds"] = round(time.perf_counter() - t0, 3)
    return record


def _one_line(message: str) -> str:
    return " ".join(message.split())


# --------------------------------------------------------------------------
# The driver
# --------------------------------------------------------------------------


@dataclass
class BatchReport:
    """What a batch did: one record per input (the entries of ``batch.json``), in input order."""

    out_dir: Path
    task: str
    records: list[dict]
    ray_version: str
    interrupted: bool = False
    nodes: dict = field(default_factory=dict)

    @property
    def failed(self) -> list[dict]:
        """The records of inputs that failed."""
        return [r for r in self.records if r["status"] == "failed"]

    def to_json(self) -> dict:
        """The content of ``batch.json``."""
        return {"engine": "ray", "ray_version": self.ray_version, "task": self.task, "inputs": self.records}

    def table(self) -> str:
        """A text table: one line per input (status, seconds, frames, registered frames, name, error)."""
        rows = [("status", "seconds", "frames", "registered", "result", "error")]
        for r in self.records:
            rows.append((r["status"], "" if r["seconds"] is None else f"{r['seconds']:.1f}",
                         "" if r["frames"] is None else str(r["frames"]),
                         "" if r["registered_frames"] is None else str(r["registered_frames"]),
                         Path(r["out"]).name, r["error"] or ""))
        widths = [max(len(row[i]) for row in rows) for i in range(5)]
        lines = ["  ".join(c.ljust(w) for c, w in zip(row[:5], widths)) + ("  " + row[5] if row[5] else "")
                 for row in rows]
        counts = {s: sum(r["status"] == s for r in self.records) for s in STATUSES}
        lines.append(f"{len(self.records)} inputs: {counts['done']} done, {counts['skipped']} skipped, "
                     f"{counts['failed']} failed" + (" (interrupted)" if self.interrupted else ""))
        return "\n".join(line.rstrip() for line in lines)


def _record(source: Path, out: Path, **values) -> dict:
    record = {"input": str(source), "out": str(out), "status": "failed", "error": None, "seconds": None,
              "frames": None, "registered_frames": None, "node": None, "threads": None}
    record.update(values)
    return record


def _crash_message(exc: BaseException, retries: int) -> str:
    import ray.exceptions as rex

    if isinstance(exc, rex.TaskCancelledError):
        return "cancelled"
    if isinstance(exc, (rex.WorkerCrashedError, rex.NodeDiedError, rex.OutOfMemoryError, rex.ObjectLostError)):
        return _one_line(f"the worker running it died (killed, or out of memory) and {retries} retries did "
                         f"not help ({type(exc).__name__})")
    if isinstance(exc, rex.RayTaskError):
        cause = getattr(exc, "cause", None) or exc
        return _one_line(f"internal error ({type(cause).__name__}: {(str(cause).splitlines() or [''])[-1]})")
    return _one_line(f"{type(exc).__name__}: {exc}")


def _token_auth_for_clusters() -> None:
    """Clusters started with ``ray start`` by this Ray use token authentication, and a driver that
    connects to one must say so (``RAY_AUTH_MODE=token``) before Ray is imported (Ray reads it then).
    Where this machine holds a token and nothing says otherwise, say so."""
    import sys

    token_file = Path(os.environ.get("RAY_AUTH_TOKEN_PATH", Path.home() / ".ray" / "auth_token"))
    if "RAY_AUTH_MODE" in os.environ or not (os.environ.get("RAY_AUTH_TOKEN") or token_file.is_file()):
        return
    if "ray" in sys.modules:
        logger.debug("Ray is already imported: RAY_AUTH_MODE is left as it is")
        return
    os.environ["RAY_AUTH_MODE"] = "token"


def _start_ray(address: str | None, verbose: bool) -> bool:
    """Connect to ``address``, or start a local Ray; True when this call started it (so must stop it)."""
    import ray

    if ray.is_initialized():
        return False
    common = dict(include_dashboard=False, log_to_driver=verbose, logging_level=logging.WARNING,
                  configure_logging=True)
    if address:
        try:
            ray.init(address=address, **common)
        except (ConnectionError, ValueError, RuntimeError) as exc:
            raise Track3DError(f"cannot connect to the Ray cluster at {address}: {_one_line(str(exc))} (is it "
                               "running? does this machine hold the cluster's token, ~/.ray/auth_token?)") from None
        return True
    ray.init(object_store_memory=256 * 1024 * 1024, **common)
    return True


def _slots(cpus: float, gpus: float) -> int:
    """How many tasks of this size the cluster can run at once, now."""
    import ray

    total = ray.cluster_resources()
    slots = int(total.get("CPU", 0) // cpus) if cpus > 0 else 1 << 30
    if gpus > 0:
        slots = min(slots, int(total.get("GPU", 0) // gpus))
    return max(1, min(slots, 1 << 30))


def task_resources(cluster: dict, cpus_per_task: float | None = None, gpus_per_task: float | None = None
                   ) -> tuple[float, float]:
    """CPUs and GPUs per task: those asked for, else the defaults for this cluster.

    Defaults: one GPU per task where the cluster has GPUs, else none; one CPU per
    task, or, with GPU tasks, the cluster's CPUs shared evenly among the tasks its
    GPUs can hold at once.

    Args:
        cluster: the cluster's resources (``ray.cluster_resources()``: ``"CPU"``, ``"GPU"``).
        cpus_per_task, gpus_per_task: what the user asked for, or None.

    Returns:
        ``(cpus, gpus)`` per task.

    Raises:
        Track3DError: one task would need more than the whole cluster has.
    """
    total_cpu, total_gpu = float(cluster.get("CPU", 0)), float(cluster.get("GPU", 0))
    gpus = float(gpus_per_task) if gpus_per_task is not None else (1.0 if total_gpu > 0 else 0.0)
    if cpus_per_task is not None:
        cpus = float(cpus_per_task)
    elif gpus > 0 and total_gpu > 0:
        cpus = max(1.0, float(total_cpu // max(total_gpu // gpus, 1)))
    else:
        cpus = 1.0
    if cpus > total_cpu or gpus > total_gpu:
        raise Track3DError(f"a task asks for {cpus:g} CPU(s) and {gpus:g} GPU(s), but the Ray cluster has "
                           f"{total_cpu:g} CPU(s) and {total_gpu:g} GPU(s) in all")
    return cpus, gpus


def run_batch(
    inputs: Sequence[str | Path],
    out_dir: str | Path,
    *,
    task: str = "reconstruct",
    options: dict | None = None,
    viz: bool = True,
    address: str | None = None,
    cpus_per_task: float | None = None,
    gpus_per_task: float | None = None,
    retries: int = 2,
    timeout: float | None = None,
    overwrite: bool = False,
    verbose: bool = False,
    progress: Callable[[dict, int, int], None] | None = None,
) -> BatchReport:
    """Run ``task`` on every input as Ray tasks; write one result folder per input and ``batch.json``.

    Args:
        inputs: videos, folders and list files (:func:`collect_inputs`).
        out_dir: the batch's folder: ``out_dir/<name>/`` per input
            (:func:`assign_names`) and ``out_dir/batch.json``.
        task: ``"reconstruct"`` (:func:`track3d.reconstruct`) or ``"track"`` (:func:`track3d.track`).
        options: fields of :class:`~track3d.reconstruction.ReconstructOptions`
            (``track``: :class:`~track3d.tracking.TrackOptions`), the same for every input.
        viz: write the viewable files too (``reconstruct``: ``recording.rrd``
            and ``overlay.mp4``; ``track``: ``overlay.mp4``).
        address: a running Ray cluster (``ray start --head`` prints it; ``"auto"``
            finds the local one). None: ``$RAY_ADDRESS`` where it is set, else a local Ray
            is started for the batch and stopped after it (unless this process already
            runs Ray: then that is used).
        cpus_per_task: CPUs Ray reserves per task, and its threads (default: 1;
            with GPU tasks, the cluster's CPUs shared among its GPUs).
        gpus_per_task: GPUs per task (default: 1 where the cluster has GPUs, else 0).
        retries: how often a task whose worker died is run again (not for bad input).
        timeout: seconds a task may run (None: no limit).
        overwrite: redo inputs that have a complete result.
        verbose: show the workers' log output.
        progress: optional ``callable(record, finished, total)`` after each input (and once with
            ``record=None`` when the complete results have been counted, before any task runs).

    Returns:
        :class:`BatchReport`. When interrupted (KeyboardInterrupt), running tasks are
        cancelled, no partial folder is left, ``batch.json`` is written (unfinished
        inputs failed with ``"interrupted"``), and the KeyboardInterrupt propagates
        with the report as its argument.

    Raises:
        Track3DError: a usage error (bad option, missing input, unreachable cluster).
        OutputError: ``out_dir`` is not a folder.
    """
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address:
        _token_auth_for_clusters()
    import ray

    if task not in TASKS:
        raise Track3DError(f"unknown task {task!r}; tasks: {', '.join(TASKS)}")
    if retries < 0:
        raise Track3DError(f"--retries must be 0 or more, got {retries}")
    if timeout is not None and timeout <= 0:
        raise Track3DError(f"--timeout must be a positive number of seconds, got {timeout}")
    if cpus_per_task is not None and cpus_per_task <= 0:
        raise Track3DError(f"--cpus-per-task must be positive, got {cpus_per_task}")
    if gpus_per_task is not None and gpus_per_task < 0:
        raise Track3DError(f"--gpus-per-task must be 0 or more, got {gpus_per_task}")
    options = _check_options(task, options or {})
    out_dir = Path(os.path.abspath(Path(out_dir).expanduser()))
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputError(f"{out_dir} exists and is not a folder; choose another --out")
    sources = collect_inputs(inputs)
    out_dir.mkdir(parents=True, exist_ok=True)
    names = assign_names(sources, out_dir)
    folders = [out_dir / n for n in names]
    removed = remove_partial(out_dir, names)
    if removed:
        logger.info("removed %d partial result folder(s) left by an earlier run", removed)

    report = BatchReport(out_dir, task, [None] * len(sources), ray.__version__)
    finished = 0
    todo = []
    for i, (source, folder) in enumerate(zip(sources, folders)):
        summary = None if overwrite else existing_result(folder, task, source)
        if summary is None:
            todo.append(i)
            continue
        report.records[i] = _record(source, folder, status="skipped", seconds=0.0, frames=summary.get("frames"),
                                    registered_frames=summary.get("registered_frames"))
        finished += 1
        if progress:
            progress(report.records[i], finished, len(sources))
    _write_report(report)
    if progress:
        progress(None, finished, len(sources))
    if not todo:
        return report

    started = _start_ray(address, verbose)
    try:
        cpus, gpus = task_resources(ray.cluster_resources(), cpus_per_task, gpus_per_task)
        threads = max(1, int(cpus))
        env = {var: str(threads) for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
        if os.environ.get(TEST_HOOK_ENV):
            env[TEST_HOOK_ENV] = os.environ[TEST_HOOK_ENV]
        remote = ray.remote(run_task).options(num_cpus=cpus, num_gpus=gpus, max_retries=retries,
                                              retry_exceptions=False, runtime_env={"env_vars": env},
                                              name=f"track3d-{task}")
        logger.info("%d inputs to run (%d already done), %g CPU and %g GPU per task", len(todo),
                    len(sources) - len(todo), cpus, gpus)
        pending = list(todo)
        running: dict = {}  # ObjectRef -> (index, submitted at)
        try:
            while pending or running:
                room = _slots(cpus, gpus) - len(running)
                while pending and room > 0:
                    i = pending.pop(0)
                    ref = remote.remote(task, str(sources[i]), str(folders[i]), options, viz=viz,
                                        overwrite=overwrite, threads=threads, timeout=timeout)
                    running[ref] = (i, time.monotonic())
                    room -= 1
                done, _ = ray.wait(list(running), num_returns=1, timeout=0.5)
                now = time.monotonic()
                for ref in done:
                    i, t_start = running.pop(ref)
                    try:
                        values = ray.get(ref)
                    except ray.exceptions.RayError as exc:
                        values = {"error": _crash_message(exc, retries), "seconds": round(now - t_start, 3)}
                    remove_partial(out_dir, [names[i]])
                    report.records[i] = _record(sources[i], folders[i], **values)
                    finished += 1
                    _write_report(report)
                    if progress:
                        progress(report.records[i], finished, len(sources))
                if timeout is not None:
                    for ref, (i, t_start) in list(running.items()):
                        if now - t_start > timeout + FORCE_GRACE_S:
                            ray.cancel(ref, force=True)
                            running.pop(ref)
                            _wait_quietly([ref], 10.0)
                            remove_partial(out_dir, [names[i]])
                            report.records[i] = _record(sources[i], folders[i], seconds=round(now - t_start, 3),
                                                        error=f"timed out after {timeout:g} s (--timeout); "
                                                        "stopped by force")
                            finished += 1
                            _write_report(report)
                            if progress:
                                progress(report.records[i], finished, len(sources))
        except KeyboardInterrupt:
            report.interrupted = True
            _cancel(list(running))
            remove_partial(out_dir, names)
            for i, record in enumerate(report.records):
                if record is None:
                    report.records[i] = _record(sources[i], folders[i], error="interrupted before it finished")
            _write_report(report)
            raise KeyboardInterrupt(report) from None
    finally:
        if started:
            ray.shutdown()
        remove_partial(out_dir, names)
    return report


def _wait_quietly(refs: list, seconds: float) -> None:
    import ray

    deadline = time.monotonic() + seconds
    remaining = list(refs)
    while remaining and time.monotonic() < deadline:
        done, remaining = ray.wait(remaining, num_returns=len(remaining), timeout=0.2)


def _cancel(refs: list) -> None:
    """Stop running tasks: first politely (KeyboardInterrupt inside the task, so it cleans up), then
    by force for those still running after a few seconds."""
    import ray

    for ref in refs:
        ray.cancel(ref, force=False)
    deadline = time.monotonic() + 5.0
    remaining = list(refs)
    while remaining and time.monotonic() < deadline:
        try:
            _, remaining = ray.wait(remaining, num_returns=len(remaining), timeout=0.2)
        except KeyboardInterrupt:  # a second Ctrl-C: stop waiting
            break
    for ref in remaining:
        ray.cancel(ref, force=True)
    _wait_quietly(remaining, 5.0)


def _check_options(task: str, options: dict) -> dict:
    """``options`` as a plain dict of the task's option fields; unknown names are a usage error."""
    from track3d.reconstruction import ReconstructOptions
    from track3d.tracking import TrackOptions

    cls = ReconstructOptions if task == "reconstruct" else TrackOptions
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise Track3DError(f"option(s) {', '.join(unknown)} do not apply to --task {task}")
    return dataclasses.asdict(cls(**options))


def _write_report(report: BatchReport) -> None:
    records = [r for r in report.records if r is not None]
    io.write_json_atomic(report.out_dir / BATCH_FILE, {**report.to_json(), "inputs": records})


# --------------------------------------------------------------------------
# Teacher labels for pseudo-labelling
# --------------------------------------------------------------------------


def load_labels(folders: Sequence[str | Path]):
    """The teacher tracks that ``track3d batch --task track`` wrote, for ``track3d pseudo-label --labels``.

    Every folder under ``folders`` (searched recursively) that holds ``tracks.npz``
    and ``summary.json`` is one labelled video: the video is the summary's
    ``source``, the teacher its ``model``. The arrays are read when a training
    step uses them.

    Args:
        folders: batch output folders (one per teacher, or any folders above them).

    Returns:
        ``list[cotracker3.train.pseudo_label.LabelledVideo]``, sorted by folder.

    Raises:
        Track3DError: a folder does not exist, or no labels are found.
    """
    from functools import partial

    from cotracker3.train.pseudo_label import LabelledVideo

    labels = []
    for root in folders:
        root = Path(root).expanduser()
        if not root.is_dir():
            raise Track3DError(f"the labels folder {root} does not exist; make it with "
                               "'track3d batch VIDEOS --task track --model TEACHER --out DIR'")
        for tracks_file in sorted(root.rglob(io.TRACKS_FILE)):
            folder = tracks_file.parent
            if folder.name.startswith("."):
                continue
            try:
                summary = json.loads((folder / "summary.json").read_text())
                labels.append(LabelledVideo(video=Path(summary["source"]), teacher=str(summary["model"]),
                                            num_frames=int(summary["frames"]),
                                            load=partial(io.load_tracks, tracks_file),
                                            read=partial(_read_frames, summary["source"])))
            except (OSError, ValueError, KeyError, TypeError) as exc:
                logger.warning("skipping the labels in %s: no readable summary.json (%s)", folder, exc)
    if not labels:
        raise Track3DError(f"no labels (tracks.npz with summary.json) in {', '.join(map(str, folders))}; make "
                           "them with 'track3d batch VIDEOS --task track --model TEACHER --out DIR'")
    return labels


def _read_frames(source: str, start: int, length: int, step: int):
    """Frames ``start, start + step, ...`` (``length`` at most) of a video file or image folder,
    ``(L, H, W, 3)`` uint8; a video that cannot be read is a ``DatasetError`` (what training skips)."""
    import numpy as np

    from cotracker3.errors import DatasetError
    from track3d import video

    try:
        frames = list(video.iter_frames(source, start=start, end=start + (length - 1) * step + 1, stride=step))
    except Track3DError as exc:
        raise DatasetError(str(exc)) from None
    if not frames:
        raise DatasetError(f"no frame of {source} from frame {start}")
    return np.stack(frames)
