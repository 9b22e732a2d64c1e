"""Where CoTracker3 weights come from, and how they are loaded safely.

The registry :data:`REGISTRY` is a table of :class:`PretrainedConfig`: for each
model name, the published file, its URL, whether the model is the offline or
the online variant, its window length and the resolution its frames must be
resized to. Weights are found in this order (:func:`resolve_weights`):

1. an explicit path given by the caller (``--checkpoint PATH``);
2. the local cache, ``cache_dir() / "checkpoints" / <filename>``;
3. a download from the URL into the cache (never when ``TRACK3D_OFFLINE=1``).

Without network the error says which file is needed and where to put it.
Loading never executes code from the file: ``.pth``/``.pt`` files go through
``torch.load(..., weights_only=True)`` and ``.safetensors`` files through
:mod:`safetensors`. Keys and shapes are compared with the model before
``load_state_dict(strict=True)``, so a wrong file gives a short message that
lists what differs instead of torch's wall of text.

Environment variables:

- ``TRACK3D_CACHE``: the cache directory (default
  ``$XDG_CACHE_HOME/track3d``, else ``~/.cache/track3d``).
- ``TRACK3D_OFFLINE``: when set to ``1`` (or ``true``/``yes``/``on``), never
  try the network.
"""

from __future__ import annotations

import http.client
import logging
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from cotracker3.errors import CheckpointError, CoTrackerError, WeightsUnavailableError
from cotracker3.model import CoTracker3, CoTracker3Offline, CoTracker3Online

logger = logging.getLogger(__name__)

HF_REPO_URL = "https://huggingface.co/facebook/cotracker3/resolve/main"
"""Base URL of the published CoTracker3 weights (Hugging Face repo facebook/cotracker3)."""

DOWNLOAD_TIMEOUT_S = 30.0
"""Seconds a download waits for the server to connect or send the next bytes."""

COMPUTED_BUFFERS = ("time_emb",)
"""Buffers the model computes itself: a checkpoint may leave them out."""

_CHUNK_BYTES = 1 << 20
_MAX_LISTED = 10


@dataclass(frozen=True)
class PretrainedConfig:
    """Where a model's weights come from and how its inputs must be prepared.

    Attributes:
        name: registry name, e.g. ``"cotracker3-offline"``.
        filename: name of the weight file, in the cache and at the URL.
        url: where the file is downloaded from.
        offline: True for the offline model (whole video at once), False for
            the online model (sliding windows, streaming).
        window_len: frames per window the model was trained with (60 offline,
            16 online).
        model_resolution: (H, W) in pixels that frames are resized to before
            the model sees them.
        description: one line for humans (``--help``, listings).
    """

    name: str
    filename: str
    url: str
    offline: bool
    window_len: int
    model_resolution: tuple[int, int] = (384, 512)
    description: str = ""


def _published(
    name: str, filename: str, *, offline: bool, window_len: int, description: str
) -> PretrainedConfig:
    return PretrainedConfig(
        name=name,
        filename=filename,
        url=f"{HF_REPO_URL}/{filename}",
        offline=offline,
        window_len=window_len,
        description=description,
    )


REGISTRY: dict[str, PretrainedConfig] = {
    cfg.name: cfg
    for cfg in (
        _published(
            "cotracker3-offline",
            "scaled_offline.pth",
            offline=True,
            window_len=60,
            description="CoTracker3 offline, trained on Kubric and pseudo-labelled real videos.",
        ),
        _published(
            "cotracker3-online",
            "scaled_online.pth",
            offline=False,
            window_len=16,
            description="CoTracker3 online, trained on Kubric and pseudo-labelled real videos.",
        ),
        _published(
            "cotracker3-offline-kubric",
            "baseline_offline.pth",
            offline=True,
            window_len=60,
            description="CoTracker3 offline, trained on Kubric only.",
        ),
        _published(
            "cotracker3-online-kubric",
            "baseline_online.pth",
            offline=False,
            window_len=16,
            description="CoTracker3 online, trained on Kubric only.",
        ),
        PretrainedConfig(
            name="embedded",
            filename="model.safetensors",
            url="",
            offline=True,
            window_len=24,
            model_resolution=(256, 256),
            description="the project's own small CoTracker3, shipped inside the package (cotracker3.embedded)",
        ),
    )
}
"""The known models, by name."""


class UnknownModelError(CoTrackerError, KeyError):
    """A model name that is not in :data:`REGISTRY`."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0]) if self.args else ""


def get_config(name: str) -> PretrainedConfig:
    """The registry entry of a model.

    Args:
        name: a key of :data:`REGISTRY`, e.g. ``"cotracker3-offline"``.

    Returns:
        Its :class:`PretrainedConfig`.

    Raises:
        UnknownModelError: ``name`` is not in the registry (the message lists
            the known names).
    """
    try:
        return REGISTRY[name]
    except (KeyError, TypeError):
        known = ", ".join(sorted(REGISTRY))
        raise UnknownModelError(f"unknown CoTracker3 model {name!r}; known models: {known}") from None


def build_model(name: str = "cotracker3-offline", **overrides) -> CoTracker3:
    """Build the architecture of a registered model (no weights, no I/O).

    Args:
        name: a registry name (``cotracker3-offline``, ``cotracker3-online``,
            ``cotracker3-offline-kubric``, ``cotracker3-online-kubric``, ...), or
            ``"offline"`` / ``"online"`` for the published sizes.
        **overrides: constructor arguments that replace the registry's.

    Returns:
        :class:`CoTracker3Offline` or :class:`CoTracker3Online`, randomly initialised.
    """
    if name in ("offline", "online"):
        offline, kwargs = name == "offline", {"window_len": 60 if name == "offline" else 16}
    else:
        cfg = get_config(name)
        offline = cfg.offline
        kwargs = {"window_len": cfg.window_len, "model_resolution": tuple(cfg.model_resolution)}
        kwargs.update(getattr(cfg, "arch", None) or {})
    kwargs.update(overrides)
    return (CoTracker3Offline if offline else CoTracker3Online)(**kwargs)


def _env(name: str) -> str | None:
    value = os.environ.get(name, "").strip()
    return value or None


def _offline_mode() -> bool:
    value = _env("TRACK3D_OFFLINE")
    return value is not None and value.lower() not in ("0", "false", "no", "off")


def cache_dir() -> Path:
    """The directory where track3d keeps downloaded files.

    ``$TRACK3D_CACHE`` if set, else ``$XDG_CACHE_HOME/track3d`` (when that is
    an absolute path, as the XDG specification requires), else
    ``~/.cache/track3d``. Weights live under ``cache_dir() / "checkpoints"``.
    The directory is not created here.

    Returns:
        An absolute path (a relative ``$TRACK3D_CACHE`` is made absolute once,
        here, so later ``chdir`` calls do not move the cache).
    """
    explicit = _env("TRACK3D_CACHE")
    if explicit is not None:
        return Path(explicit).expanduser().absolute()
    xdg = _env("XDG_CACHE_HOME")
    if xdg is not None and Path(xdg).expanduser().is_absolute():
        return Path(xdg).expanduser() / "track3d"
    return Path.home() / ".cache" / "track3d"


def _cache_file(cfg: PretrainedConfig) -> Path:
    return cache_dir() / "checkpoints" / cfg.filename


def _unavailable(cfg: PretrainedConfig, dest: Path, reason: str) -> WeightsUnavailableError:
    return WeightsUnavailableError(
        f"CoTracker3 weights {cfg.filename!r} are not in the cache and could not be "
        f"downloaded ({reason}). Download {cfg.url} and save it as {dest}, "
        "or pass --checkpoint PATH (checkpoint=PATH in Python)."
    )


def _download_reason(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        return f"network error: {exc.reason}"
    if isinstance(exc, TimeoutError):
        return f"no answer within {DOWNLOAD_TIMEOUT_S:g} s"
    return f"{type(exc).__name__}: {exc}"


def _download(url: str, dest: Path, *, progress: bool) -> None:
    """Stream ``url`` into ``dest`` through a temporary file in the same folder.

    The temporary file is renamed to ``dest`` only once every byte arrived, so
    ``dest`` is either absent or complete; on any failure the temporary file
    is removed and the exception propagates.
    """
    from tqdm.auto import tqdm

    dest.parent.mkdir(parents=True, exist_ok=True)
    request = urllib.request.Request(url, headers={"User-Agent": "track3d"})
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(
            request, timeout=DOWNLOAD_TIMEOUT_S
        ) as response:
            length = response.headers.get("Content-Length")
            total = int(length) if length is not None and str(length).isdigit() else None
            received = 0
            with tqdm(
                total=total,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=dest.name,
                disable=not progress,
            ) as bar:
                while True:
                    chunk = response.read(_CHUNK_BYTES)
                    if not chunk:
                        break
                    out.write(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
            if total is not None and received != total:
                raise OSError(f"download ended after {received} of {total} bytes")
            if received == 0:
                raise OSError("the server sent an empty file")
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def resolve_weights(
    name: str,
    path: str | Path | None = None,
    *,
    download: bool = True,
    progress: bool = True,
) -> Path:
    """Find the weight file of a model: explicit path, then cache, then download.

    Args:
        name: a key of :data:`REGISTRY`.
        path: a checkpoint file chosen by the caller; when given it is used
            as is and nothing else is tried.
        download: whether a file missing from the cache may be downloaded.
            ``TRACK3D_OFFLINE=1`` in the environment forbids it too.
        progress: show a progress bar (tqdm, on stderr) while downloading.

    Returns:
        The path of an existing file. A download lands in
        ``cache_dir() / "checkpoints" / <filename>``.

    Raises:
        UnknownModelError: ``name`` is not in the registry.
        CheckpointError: ``path`` was given but is not an existing file.
        WeightsUnavailableError: the file is not in the cache and could not be
            (or was not allowed to be) downloaded; the message names the file,
            its URL and the exact cache path to save it as.
    """
    cfg = get_config(name)
    if path is not None:
        explicit = Path(path).expanduser()
        if not explicit.exists():
            raise CheckpointError(f"no such file: {explicit} (given as the {name} checkpoint)")
        if not explicit.is_file():
            raise CheckpointError(f"{explicit} is not a file (given as the {name} checkpoint)")
        logger.debug("Using the %s weights at %s", name, explicit)
        return explicit

    dest = _cache_file(cfg)
    if dest.is_file():
        logger.debug("Using the cached %s weights at %s", name, dest)
        return dest

    if _offline_mode():
        raise _unavailable(cfg, dest, "TRACK3D_OFFLINE is set, so the network is not used")
    if not download:
        raise _unavailable(cfg, dest, "downloading was disabled")

    logger.info("Downloading the %s weights from %s to %s", name, cfg.url, dest)
    try:
        _download(cfg.url, dest, progress=progress)
    except (OSError, http.client.HTTPException, ValueError) as exc:
        # URLError, HTTPError and TimeoutError are OSErrors; IncompleteRead is
        # an HTTPException; ValueError covers a malformed response.
        raise _unavailable(cfg, dest, _download_reason(exc)) from exc
    return dest


def _not_a_checkpoint(path: Path, reason: str) -> CheckpointError:
    return CheckpointError(f"{path} is not a CoTracker3 checkpoint: {reason}")


def _short(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    text = lines[0] if lines else ""
    if len(text) > 200:
        text = text[:197] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state dict from a checkpoint file without executing code from it.

    ``.safetensors`` files are read with :func:`safetensors.torch.load_file`;
    anything else (``.pth``, ``.pt``) with
    ``torch.load(path, map_location="cpu", weights_only=True)``, which refuses
    pickles that would construct arbitrary objects. A top-level ``"model"`` or
    ``"state_dict"`` entry (training checkpoints) is unwrapped, and a
    ``"module."`` prefix shared by every key (DataParallel) is stripped.

    Args:
        path: the checkpoint file.

    Returns:
        ``{name: tensor}``, tensors on the CPU, in the file's dtypes.

    Raises:
        CheckpointError: the file does not exist, cannot be read, is not a
            zip/pickle/safetensors file, is truncated, needs arbitrary code to
            unpickle, or does not hold a non-empty dict of tensors.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(f"no such file: {path}")

    is_safetensors = path.suffix.lower() == ".safetensors"
    if not is_safetensors:
        try:
            with open(path, "rb") as f:
                head = f.read(4)
        except OSError as exc:
            raise CheckpointError(f"cannot read {path}: {_short(exc)}") from exc
        if not head:
            raise _not_a_checkpoint(path, "the file is empty")
        if not (head.startswith(b"PK") or head[0] == 0x80):
            raise _not_a_checkpoint(path, "it is not a PyTorch file (no zip or pickle header)")

    try:
        if is_safetensors:
            from safetensors.torch import load_file

            obj: object = load_file(str(path), device="cpu")
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch and safetensors raise many types; all mean "bad file"
        raise _not_a_checkpoint(path, f"it could not be read safely ({_short(exc)})") from exc

    if isinstance(obj, Mapping):
        for wrapper in ("model", "state_dict"):
            inner = obj.get(wrapper)
            if isinstance(inner, Mapping):
                obj = inner
                break
    if not isinstance(obj, Mapping):
        raise _not_a_checkpoint(path, f"it holds a {type(obj).__name__}, not a dict of tensors")
    if not obj:
        raise _not_a_checkpoint(path, "it holds an empty dict")

    bad_keys = [repr(k) for k in obj if not isinstance(k, str)]
    if bad_keys:
        raise _not_a_checkpoint(path, f"keys that are not strings: {_listing(bad_keys)}")
    bad_values = [f"{k} ({type(v).__name__})" for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if bad_values:
        raise _not_a_checkpoint(path, f"values that are not tensors: {_listing(bad_values)}")

    state_dict = dict(obj)
    prefix = "module."
    if all(k.startswith(prefix) for k in state_dict):
        state_dict = {k[len(prefix) :]: v for k, v in state_dict.items()}
    return state_dict


def _listing(items: list[str]) -> str:
    shown = ", ".join(items[:_MAX_LISTED])
    if len(items) > _MAX_LISTED:
        shown += f", ... and {len(items) - _MAX_LISTED} more"
    return shown


def _is_computed(key: str) -> bool:
    return any(key == b or key.endswith("." + b) for b in COMPUTED_BUFFERS)


def _shape(shape: torch.Size) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ")"


def check_state_dict(
    model: torch.nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    *,
    source: str | Path | None = None,
) -> None:
    """Check that a state dict has exactly the model's keys and shapes.

    Buffers the model computes itself (``time_emb``) may be absent from
    ``state_dict``; :func:`load_checkpoint` fills them from the model.

    Args:
        model: the model the weights are meant for.
        state_dict: ``{name: tensor}``, e.g. from :func:`load_state_dict_file`.
        source: where the weights come from (a path), named in the message.

    Raises:
        CheckpointError: keys are missing, unexpected, or have another shape
            than the model's; the message lists up to 10 of each, with counts.
    """
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict and not _is_computed(k)]
    unexpected = [k for k in state_dict if k not in expected]
    mismatched = [
        f"{k} (checkpoint {_shape(v.shape)}, model {_shape(expected[k].shape)})"
        for k, v in state_dict.items()
        if k in expected and tuple(v.shape) != tuple(expected[k].shape)
    ]
    if not (missing or unexpected or mismatched):
        return

    parts = []
    for items, what in ((missing, "missing key"), (unexpected, "unexpected key"), (mismatched, "shape mismatch")):
        if items:
            plural = "es" if what.endswith("h") else "s"
            label = what if len(items) == 1 else what + plural
            parts.append(f"{len(items)} {label}: {_listing(items)}")
    origin = f"{source} does not fit" if source is not None else "the checkpoint does not fit"
    hint = ""
    if not (missing or unexpected) and all(m.startswith("time_emb ") for m in mismatched):
        window = int(state_dict["time_emb"].shape[1])
        hint = (f". Its window length is {window}: it is probably an "
                f"{'online' if window < 60 else 'offline'} model's checkpoint "
                f"({'add' if window < 60 else 'drop'} --online / pick the matching model name)")
    raise CheckpointError(
        f"{origin} the {type(model).__name__} model ({len(expected)} entries expected, "
        f"{len(state_dict)} found): " + "; ".join(parts) + hint
    )


def load_checkpoint(model: torch.nn.Module, path: str | Path) -> torch.nn.Module:
    """Load a checkpoint file into a model, strictly.

    Args:
        model: the architecture, e.g. from :func:`build_model`.
        path: a ``.pth``/``.pt``/``.safetensors`` checkpoint.

    Returns:
        The same ``model``, with the weights loaded, in eval mode.

    Raises:
        CheckpointError: the file is not a CoTracker3 checkpoint (see
            :func:`load_state_dict_file`) or does not fit the model (see
            :func:`check_state_dict`).
    """
    state_dict = load_state_dict_file(path)
    check_state_dict(model, state_dict, source=path)
    for key, value in model.state_dict().items():
        if _is_computed(key) and key not in state_dict:
            state_dict[key] = value
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as exc:  # e.g. a dtype that cannot be copied into a parameter
        raise CheckpointError(f"{path} could not be loaded into the model: {_short(exc)}") from exc
    logger.debug("Loaded %d tensors from %s", len(state_dict), path)
    return model.eval()


def from_pretrained(
    name: str = "cotracker3-offline",
    *,
    checkpoint: str | Path | None = None,
    download: bool = True,
    progress: bool = True,
) -> torch.nn.Module:
    """Build a registered model and load its weights.

    Args:
        name: a key of :data:`REGISTRY`; decides the architecture (offline or
            online, window length) and the published file.
        checkpoint: a weight file to use instead of the cache or a download.
        download: whether missing weights may be downloaded into the cache.
        progress: show a progress bar while downloading.

    Returns:
        The model, weights loaded, in eval mode, on the CPU.

    Raises:
        UnknownModelError: ``name`` is not in the registry.
        CheckpointError: ``checkpoint`` does not exist, or a file is not a
            CoTracker3 checkpoint or does not fit the architecture.
        WeightsUnavailableError: the weights are neither given, cached nor
            downloadable.
    """
    get_config(name)
    if name == "embedded":
        from cotracker3 import embedded

        if checkpoint is None:
            return embedded.load()
        model = build_model(name, **_embedded_arch())
        return load_checkpoint(model, resolve_weights(name, checkpoint, download=False))
    model = build_model(name)
    path = resolve_weights(name, checkpoint, download=download, progress=progress)
    return load_checkpoint(model, path)


def model_from_checkpoint(path: str | Path, kind: str | None = None) -> torch.nn.Module:
    """Build the model a checkpoint file was saved from, and load it.

    The ``model.pt`` of a ``track3d train`` / ``pseudo-label`` run folder (or
    the folder itself) is built with the sizes and kind its ``checkpoint.pt``
    records. Any other file gets the published sizes. Offline and online models
    have the same parameters; they differ in the window length stored in the
    ``time_emb`` buffer (60 frames offline, 16 online), which decides when
    ``kind`` is not given. A file without ``time_emb`` loads as an offline model.

    Args:
        path: a ``.pth``/``.pt``/``.safetensors`` checkpoint, or a run folder.
        kind: ``"offline"`` or ``"online"`` to force the architecture.

    Returns:
        The model, weights loaded, in eval mode, on the CPU.

    Raises:
        CheckpointError: the file does not exist, is not a checkpoint, or fits
            neither architecture.
    """
    path = Path(path)
    if path.is_dir() and (path / "model.pt").is_file():
        path = path / "model.pt"
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    run = _training_run_config(path)
    if run is not None:
        arch = dict(run.get("model") or {})
        run_kind = "online" if run.get("online") else "offline"
        if kind not in (None, run_kind):
            raise CheckpointError(f"{path} is the {run_kind} model of a training run, not {kind}")
        return load_checkpoint(build_model(run_kind, **arch), path)
    if kind is None:
        state_dict = load_state_dict_file(path)
        emb = state_dict.get("time_emb")
        window = int(emb.shape[1]) if emb is not None and emb.ndim == 3 else None
        kind = "online" if window == 16 else "offline"
    if kind not in ("offline", "online"):
        raise ValueError(f"kind must be 'offline', 'online' or None, got {kind!r}")
    return load_checkpoint(build_model(kind), path)


def _training_run_config(path: Path) -> dict | None:
    """The configuration a training run folder records beside its ``model.pt``, or None."""
    ckpt_path = path.parent / "checkpoint.pt"
    if path.name != "model.pt" or not ckpt_path.is_file():
        return None
    try:
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is reported the same way
        raise CheckpointError(f"cannot read the run's {ckpt_path} for the model's sizes "
                              f"({type(exc).__name__}: {_short(exc)})") from exc
    config = ckpt.get("config") if isinstance(ckpt, dict) else None
    return config if isinstance(config, dict) and isinstance(config.get("model"), dict) else None


def _embedded_arch() -> dict:
    """The embedded model's sizes: from the shipped provenance, else the training default."""
    from cotracker3 import embedded

    arch = dict(embedded.provenance()["architecture"]) if embedded.available() else dict(embedded.SMALL_MODEL)
    arch.pop("window_len", None)
    arch.pop("model_resolution", None)
    return arch
