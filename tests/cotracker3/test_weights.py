"""Tests of cotracker3.weights: registry, cache, resolution, safe loading.

No test touches the network: the cache is a tmp_path (``TRACK3D_CACHE``) and
``urllib.request.urlopen`` is replaced by a fake wherever a download could
happen.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import pickle
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import torch
from torch import nn

from cotracker3 import weights
from cotracker3.errors import CheckpointError, CoTrackerError, WeightsUnavailableError
from cotracker3.weights import (
    REGISTRY,
    PretrainedConfig,
    UnknownModelError,
    cache_dir,
    check_state_dict,
    from_pretrained,
    get_config,
    load_checkpoint,
    load_state_dict_file,
    resolve_weights,
)
from recipe_weights import PARITY

HF = "https://huggingface.co/facebook/cotracker3/resolve/main/"


# --------------------------------------------------------------------------- helpers


class Tiny(nn.Module):
    """A small stand-in model: one Linear and a computed ``time_emb`` buffer."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(3, 2)
        self.register_buffer("time_emb", torch.arange(4.0).reshape(1, 4, 1))


def tiny_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "linear.weight": torch.randn(2, 3, generator=g),
        "linear.bias": torch.randn(2, generator=g),
    }


class FakeResponse(io.BytesIO):
    """What ``urlopen`` returns: a readable body and a ``headers`` mapping."""

    def __init__(self, data: bytes, length: int | None = None) -> None:
        super().__init__(data)
        self.headers = {"Content-Length": str(len(data) if length is None else length)}


class FakeNet:
    """Replacement of ``urllib.request.urlopen`` that records its calls."""

    def __init__(self, make_response) -> None:
        self.make_response = make_response
        self.calls: list[tuple[str, float | None]] = []

    def __call__(self, request, timeout=None):
        url = request.full_url if isinstance(request, urllib.request.Request) else request
        self.calls.append((url, timeout))
        return self.make_response()


def no_network(*args, **kwargs):
    raise AssertionError("the network must not be used here")


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """An empty cache in tmp_path; the network is off unless a test installs a fake."""
    root = tmp_path / "cache"
    monkeypatch.setenv("TRACK3D_CACHE", str(root))
    monkeypatch.delenv("TRACK3D_OFFLINE", raising=False)
    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    return root


def files_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


# --------------------------------------------------------------------------- registry


def test_registry_has_exactly_the_published_models_and_the_embedded_one():
    assert set(REGISTRY) == {
        "cotracker3-offline",
        "cotracker3-online",
        "cotracker3-offline-kubric",
        "cotracker3-online-kubric",
        "embedded",
    }
    assert REGISTRY["embedded"].offline and REGISTRY["embedded"].model_resolution == (256, 256)
    expected = {
        "cotracker3-offline": ("scaled_offline.pth", True, 60),
        "cotracker3-online": ("scaled_online.pth", False, 16),
        "cotracker3-offline-kubric": ("baseline_offline.pth", True, 60),
        "cotracker3-online-kubric": ("baseline_online.pth", False, 16),
    }
    for name, (filename, offline, window_len) in expected.items():
        cfg = REGISTRY[name]
        assert isinstance(cfg, PretrainedConfig)
        assert cfg.name == name
        assert cfg.filename == filename
        assert cfg.url == HF + filename
        assert cfg.offline is offline
        assert cfg.window_len == window_len
        assert cfg.model_resolution == (384, 512)
        assert cfg.description


def test_config_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        REGISTRY["cotracker3-offline"].window_len = 8  # type: ignore[misc]


def test_get_config_unknown_name_lists_known_names():
    with pytest.raises(UnknownModelError) as info:
        get_config("cotracker2")
    assert isinstance(info.value, CoTrackerError)
    assert isinstance(info.value, KeyError)
    message = str(info.value)
    assert "cotracker2" in message
    for name in REGISTRY:
        assert name in message


# --------------------------------------------------------------------------- cache_dir


def test_cache_dir_from_track3d_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TRACK3D_CACHE", str(tmp_path / "c"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "c"


def test_cache_dir_from_xdg(tmp_path, monkeypatch):
    monkeypatch.delenv("TRACK3D_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "track3d"


def test_cache_dir_default_is_home(tmp_path, monkeypatch):
    monkeypatch.delenv("TRACK3D_CACHE", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert cache_dir() == tmp_path / ".cache" / "track3d"


def test_cache_dir_is_never_relative(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("TRACK3D_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/xdg")  # invalid per XDG: ignored
    assert cache_dir() == tmp_path / "home" / ".cache" / "track3d"
    monkeypatch.setenv("TRACK3D_CACHE", "rel")
    assert cache_dir().is_absolute()
    assert cache_dir() == tmp_path / "rel"


# --------------------------------------------------------------------------- resolve_weights


def test_resolve_explicit_path_wins_over_cache(cache, tmp_path):
    cached = cache / "checkpoints" / "scaled_offline.pth"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"cached")
    mine = tmp_path / "mine.pth"
    mine.write_bytes(b"mine")
    assert resolve_weights("cotracker3-offline", mine) == mine
    assert resolve_weights("cotracker3-offline", str(mine)) == mine


def test_resolve_explicit_missing_path(cache, tmp_path):
    with pytest.raises(CheckpointError, match="no such file") as info:
        resolve_weights("cotracker3-offline", tmp_path / "absent.pth")
    assert "absent.pth" in str(info.value)


def test_resolve_explicit_directory(cache, tmp_path):
    with pytest.raises(CheckpointError, match="not a file"):
        resolve_weights("cotracker3-offline", tmp_path)


def test_resolve_cache_hit_uses_no_network(cache):
    cached = cache / "checkpoints" / "scaled_online.pth"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"weights")
    assert resolve_weights("cotracker3-online") == cached


def test_resolve_unknown_name(cache):
    with pytest.raises(UnknownModelError, match="cotracker3-offline"):
        resolve_weights("nope")


def test_resolve_downloads_into_cache(cache, monkeypatch):
    payload = bytes(range(256)) * 50
    net = FakeNet(lambda: FakeResponse(payload))
    monkeypatch.setattr(urllib.request, "urlopen", net)
    path = resolve_weights("cotracker3-offline-kubric", progress=False)
    assert path == cache / "checkpoints" / "baseline_offline.pth"
    assert path.read_bytes() == payload
    assert net.calls == [(HF + "baseline_offline.pth", weights.DOWNLOAD_TIMEOUT_S)]
    assert files_in(path.parent) == ["baseline_offline.pth"]  # no temporary file left
    # A second call finds the file in the cache.
    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    assert resolve_weights("cotracker3-offline-kubric") == path


def test_resolve_download_with_progress_bar(cache, monkeypatch):
    monkeypatch.setattr(urllib.request, "urlopen", FakeNet(lambda: FakeResponse(b"x" * 3000)))
    path = resolve_weights("cotracker3-online", progress=True)
    assert path.read_bytes() == b"x" * 3000


def test_download_streams_to_a_temporary_file_in_the_cache(cache, monkeypatch):
    folder = cache / "checkpoints"
    seen: list[list[str]] = []

    class Watching(FakeResponse):
        def read(self, *args):
            seen.append(files_in(folder))
            return super().read(*args)

    monkeypatch.setattr(urllib.request, "urlopen", FakeNet(lambda: Watching(b"abc")))
    resolve_weights("cotracker3-offline", progress=False)
    # While bytes arrive, only a hidden partial file exists; the final name appears at the end.
    assert seen
    for listing in seen:
        assert "scaled_offline.pth" not in listing
        assert len(listing) == 1 and listing[0].startswith(".scaled_offline.pth.")
    assert files_in(folder) == ["scaled_offline.pth"]


def _assert_unavailable_message(message: str, cache: Path, filename: str) -> None:
    assert repr(filename) in message or filename in message
    assert HF + filename in message
    assert str(cache / "checkpoints" / filename) in message
    assert "--checkpoint" in message


def test_resolve_without_download_names_file_url_and_cache_path(cache):
    with pytest.raises(WeightsUnavailableError) as info:
        resolve_weights("cotracker3-offline", download=False)
    assert isinstance(info.value, CoTrackerError)
    _assert_unavailable_message(str(info.value), cache, "scaled_offline.pth")
    assert "disabled" in str(info.value)


@pytest.mark.parametrize("value", ["1", "true", "YES"])
def test_resolve_offline_env_never_uses_network(cache, monkeypatch, value):
    monkeypatch.setenv("TRACK3D_OFFLINE", value)
    with pytest.raises(WeightsUnavailableError) as info:
        resolve_weights("cotracker3-online")
    _assert_unavailable_message(str(info.value), cache, "scaled_online.pth")
    assert "TRACK3D_OFFLINE" in str(info.value)


def test_resolve_offline_env_zero_allows_download(cache, monkeypatch):
    monkeypatch.setenv("TRACK3D_OFFLINE", "0")
    monkeypatch.setattr(urllib.request, "urlopen", FakeNet(lambda: FakeResponse(b"w")))
    assert resolve_weights("cotracker3-online", progress=False).read_bytes() == b"w"


def test_resolve_offline_env_still_uses_cache(cache, monkeypatch):
    monkeypatch.setenv("TRACK3D_OFFLINE", "1")
    cached = cache / "checkpoints" / "scaled_offline.pth"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"w")
    assert resolve_weights("cotracker3-offline") == cached


def _refuse(exc: BaseException):
    def make():
        raise exc

    return make


@pytest.mark.parametrize(
    "exc, reason",
    [
        (urllib.error.URLError("Name or service not known"), "Name or service not known"),
        (urllib.error.HTTPError(HF, 404, "Not Found", {}, None), "HTTP 404"),
        (TimeoutError("timed out"), "no answer within"),
    ],
)
def test_failed_download_leaves_no_file(cache, monkeypatch, exc, reason):
    monkeypatch.setattr(urllib.request, "urlopen", FakeNet(_refuse(exc)))
    with pytest.raises(WeightsUnavailableError) as info:
        resolve_weights("cotracker3-offline", progress=False)
    message = str(info.value)
    assert reason in message
    _assert_unavailable_message(message, cache, "scaled_offline.pth")
    assert files_in(cache / "checkpoints") == []


def test_download_broken_mid_stream_leaves_no_partial_file(cache, monkeypatch):
    class Breaking(FakeResponse):
        def __init__(self) -> None:
            super().__init__(b"half of it", length=1000)
            self.reads = 0

        def read(self, *args):
            self.reads += 1
            if self.reads > 1:
                raise ConnectionResetError("connection reset by peer")
            return super().read(*args)

    monkeypatch.setattr(urllib.request, "urlopen", FakeNet(Breaking))
    with pytest.raises(WeightsUnavailableError, match="connection reset"):
        resolve_weights("cotracker3-offline", progress=False)
    assert files_in(cache / "checkpoints") == []


def test_download_shorter_than_content_length_is_refused(cache, monkeypatch):
    monkeypatch.setattr(urllib.request, "urlopen", FakeNet(lambda: FakeResponse(b"short", length=99)))
    with pytest.raises(WeightsUnavailableError, match="5 of 99 bytes"):
        resolve_weights("cotracker3-offline", progress=False)
    assert files_in(cache / "checkpoints") == []


# --------------------------------------------------------------------------- load_state_dict_file


def _assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert list(a) == list(b)
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.mark.parametrize("wrap", [None, "model", "state_dict"])
def test_load_pth_plain_and_wrapped(tmp_path, wrap):
    sd = tiny_state_dict()
    path = tmp_path / "w.pth"
    torch.save(sd if wrap is None else {wrap: sd, "total_steps": 7}, path)
    _assert_same(load_state_dict_file(path), sd)


def test_load_strips_module_prefix(tmp_path):
    sd = tiny_state_dict()
    path = tmp_path / "w.pt"
    torch.save({"model": {"module." + k: v for k, v in sd.items()}}, path)
    _assert_same(load_state_dict_file(path), sd)


def test_load_keeps_module_prefix_unless_every_key_has_it(tmp_path):
    sd = {"module.a": torch.zeros(1), "b": torch.ones(1)}
    path = tmp_path / "w.pth"
    torch.save(sd, path)
    assert list(load_state_dict_file(path)) == ["module.a", "b"]


def test_load_safetensors(tmp_path):
    from safetensors.torch import save_file

    sd = tiny_state_dict()
    path = tmp_path / "w.safetensors"
    save_file(sd, str(path))
    loaded = load_state_dict_file(path)
    assert set(loaded) == set(sd)
    for k in sd:
        assert torch.equal(loaded[k], sd[k])


def test_load_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="no such file"):
        load_state_dict_file(tmp_path / "absent.pth")


def _assert_not_a_checkpoint(path: Path) -> CheckpointError:
    with pytest.raises(CheckpointError) as info:
        load_state_dict_file(path)
    message = str(info.value)
    assert str(path) in message
    assert "not a CoTracker3 checkpoint" in message
    return info.value


def test_load_text_file_named_pth(tmp_path):
    path = tmp_path / "notes.pth"
    path.write_text("these are not weights\n")
    err = _assert_not_a_checkpoint(path)
    assert "no zip or pickle header" in str(err)


def test_load_empty_file(tmp_path):
    path = tmp_path / "empty.pth"
    path.write_bytes(b"")
    err = _assert_not_a_checkpoint(path)
    assert "empty" in str(err)


def test_load_truncated_pth(tmp_path):
    full = tmp_path / "full.pth"
    torch.save(tiny_state_dict(), full)
    data = full.read_bytes()
    path = tmp_path / "truncated.pth"
    path.write_bytes(data[: len(data) // 2])
    _assert_not_a_checkpoint(path)


def test_load_corrupt_safetensors(tmp_path):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    _assert_not_a_checkpoint(path)


class Payload:
    """Unpickling this object opens (creates) a marker file: code execution."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_payload_really_runs_when_unpickled_unsafely(tmp_path):
    # Control: proves the payload used below would create its marker if it ran.
    marker = tmp_path / "control-marker"
    pickle.loads(pickle.dumps(Payload(marker))).close()
    assert marker.exists()


@pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning")
@pytest.mark.parametrize("writer", ["torch.save", "pickle"])
def test_load_refuses_code_in_pickles(tmp_path, writer):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    obj = {"linear.weight": torch.zeros(2, 3), "evil": Payload(marker)}
    if writer == "torch.save":
        torch.save(obj, path)
    else:
        with open(path, "wb") as f:
            pickle.dump(obj, f)
    _assert_not_a_checkpoint(path)
    assert not marker.exists()


def test_load_non_tensor_values(tmp_path):
    path = tmp_path / "w.pth"
    torch.save({"linear.weight": torch.zeros(2, 3), "step": 3, "name": "x"}, path)
    err = _assert_not_a_checkpoint(path)
    assert "step" in str(err) and "name" in str(err)


@pytest.mark.parametrize("obj", [torch.zeros(3), [torch.zeros(3)], {}, {"model": {}}])
def test_load_not_a_dict_of_tensors(tmp_path, obj):
    path = tmp_path / "w.pth"
    torch.save(obj, path)
    _assert_not_a_checkpoint(path)


# --------------------------------------------------------------------------- check_state_dict


def test_check_accepts_exact_state_dict():
    model = Tiny()
    check_state_dict(model, model.state_dict())


def test_check_accepts_missing_time_emb():
    check_state_dict(Tiny(), tiny_state_dict())


def test_check_missing_key():
    sd = tiny_state_dict()
    del sd["linear.bias"]
    with pytest.raises(CheckpointError, match=r"1 missing key: linear\.bias"):
        check_state_dict(Tiny(), sd)


def test_check_unexpected_key():
    sd = tiny_state_dict()
    sd["head.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match=r"1 unexpected key: head\.weight"):
        check_state_dict(Tiny(), sd)


def test_check_shape_mismatch():
    sd = tiny_state_dict()
    sd["linear.weight"] = torch.zeros(4, 3)
    with pytest.raises(CheckpointError) as info:
        check_state_dict(Tiny(), sd, source="w.pth")
    message = str(info.value)
    assert "1 shape mismatch: linear.weight (checkpoint (4, 3), model (2, 3))" in message
    assert message.startswith("w.pth does not fit the Tiny model (3 entries expected, 2 found)")


def test_check_time_emb_with_wrong_shape_is_refused():
    sd = tiny_state_dict()
    sd["time_emb"] = torch.zeros(1, 5, 1)
    with pytest.raises(CheckpointError, match="time_emb"):
        check_state_dict(Tiny(), sd)


def test_check_lists_at_most_ten_of_each_with_counts():
    model = nn.Sequential(*[nn.Linear(1, 1) for _ in range(13)])
    sd = {f"extra{i}": torch.zeros(1) for i in range(12)}
    with pytest.raises(CheckpointError) as info:
        check_state_dict(model, sd)
    message = str(info.value)
    assert "26 missing keys" in message
    assert "and 16 more" in message
    assert "12 unexpected keys" in message
    assert "and 2 more" in message
    assert "extra9" in message and "extra10" not in message


# --------------------------------------------------------------------------- load_checkpoint


def test_load_checkpoint_loads_and_sets_eval(tmp_path):
    sd = tiny_state_dict(seed=3)
    sd["time_emb"] = torch.full((1, 4, 1), 7.0)
    path = tmp_path / "w.pth"
    torch.save({"model": sd}, path)
    model = Tiny().train()
    out = load_checkpoint(model, path)
    assert out is model
    assert not model.training
    for k, v in sd.items():
        assert torch.equal(model.state_dict()[k], v)


def test_load_checkpoint_without_time_emb_keeps_computed_buffer(tmp_path):
    sd = tiny_state_dict(seed=4)
    path = tmp_path / "w.safetensors"
    from safetensors.torch import save_file

    save_file(sd, str(path))
    model = load_checkpoint(Tiny(), path)
    assert torch.equal(model.time_emb, torch.arange(4.0).reshape(1, 4, 1))
    assert torch.equal(model.linear.weight, sd["linear.weight"])


@pytest.mark.parametrize(
    "edit, key",
    [
        (lambda sd: sd.pop("linear.weight"), "linear.weight"),
        (lambda sd: sd.__setitem__("extra.bias", torch.zeros(2)), "extra.bias"),
        (lambda sd: sd.__setitem__("linear.bias", torch.zeros(3)), "linear.bias"),
    ],
    ids=["missing", "unexpected", "shape"],
)
def test_load_checkpoint_mismatch_names_key_and_path(tmp_path, edit, key):
    sd = tiny_state_dict()
    edit(sd)
    path = tmp_path / "w.pth"
    torch.save(sd, path)
    model = Tiny()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(model, path)
    assert key in str(info.value)
    assert str(path) in str(info.value)
    _assert_same(model.state_dict(), before)  # nothing was half-loaded


def test_load_checkpoint_bad_file(tmp_path):
    path = tmp_path / "w.pth"
    path.write_text("hello")
    with pytest.raises(CheckpointError, match="not a CoTracker3 checkpoint"):
        load_checkpoint(Tiny(), path)


# --------------------------------------------------------------------------- from_pretrained (wiring)


@pytest.fixture
def fake_model_module(monkeypatch):
    """A build_model that returns a Tiny, in place of cotracker3.weights.build_model."""
    calls: list[str] = []

    def build_model(name_or_config, **overrides):
        calls.append(name_or_config)
        return Tiny()

    monkeypatch.setattr(weights, "build_model", build_model)
    return calls


def test_from_pretrained_with_checkpoint(cache, tmp_path, fake_model_module):
    sd = tiny_state_dict(seed=5)
    path = tmp_path / "mine.pth"
    torch.save({"model": sd}, path)
    model = from_pretrained("cotracker3-online", checkpoint=path)
    assert fake_model_module == ["cotracker3-online"]
    assert not model.training
    assert torch.equal(model.linear.bias, sd["linear.bias"])


def test_from_pretrained_from_cache(cache, fake_model_module):
    sd = tiny_state_dict(seed=6)
    cached = cache / "checkpoints" / "scaled_offline.pth"
    cached.parent.mkdir(parents=True)
    torch.save(sd, cached)
    model = from_pretrained()
    assert fake_model_module == ["cotracker3-offline"]
    assert torch.equal(model.linear.weight, sd["linear.weight"])


def test_from_pretrained_downloads(cache, monkeypatch, fake_model_module):
    buffer = io.BytesIO()
    sd = tiny_state_dict(seed=7)
    torch.save(sd, buffer)
    net = FakeNet(lambda: FakeResponse(buffer.getvalue()))
    monkeypatch.setattr(urllib.request, "urlopen", net)
    model = from_pretrained("cotracker3-online-kubric", progress=False)
    assert [url for url, _ in net.calls] == [HF + "baseline_online.pth"]
    assert torch.equal(model.linear.weight, sd["linear.weight"])


def test_from_pretrained_unavailable(cache, fake_model_module):
    with pytest.raises(WeightsUnavailableError) as info:
        from_pretrained("cotracker3-offline", download=False)
    _assert_unavailable_message(str(info.value), cache, "scaled_offline.pth")


def test_from_pretrained_unknown_name(cache, fake_model_module):
    with pytest.raises(UnknownModelError):
        from_pretrained("cotracker3-huge")
    assert fake_model_module == []


# --------------------------------------------------------------------------- the real model


@functools.lru_cache(maxsize=None)
def _recipe(kind: str) -> dict[str, torch.Tensor]:
    from recipe_weights import recipe_parameters

    return recipe_parameters(kind)


@pytest.mark.parametrize(
    "name, kind",
    [("cotracker3-offline", "offline"), ("cotracker3-online", "online")],
)
def test_from_pretrained_loads_recipe_weights_strictly(cache, tmp_path, name, kind):
    params = _recipe(kind)
    path = tmp_path / f"{kind}.pth"
    torch.save({"model": params}, path)  # no time_emb: the model computes it
    model = from_pretrained(name, checkpoint=path)
    assert not model.training
    state = model.state_dict()
    for key in ("fnet.conv1.weight", next(reversed(params))):
        assert torch.equal(state[key], params[key]), key


@pytest.mark.parametrize(
    "name, config",
    [
        ("cotracker3-offline", "offline_window_len_60"),
        ("cotracker3-online", "online_window_len_16"),
    ],
)
def test_model_state_dict_matches_reference_keys(name, config):
    import json

    table = json.loads(
        (PARITY / "state_dict_keys.json").read_text()
    )[config]
    model = weights.build_model(name)
    got = {k: list(v.shape) for k, v in model.state_dict().items()}
    want = {k: entry["shape"] for k, entry in table.items()}
    assert sorted(set(want) - set(got)) == [], "missing from the model"
    assert sorted(set(got) - set(want)) == [], "not in the reference"
    assert {k: v for k, v in got.items() if v != want[k]} == {}, "shapes differ"
    parameters = {k for k, _ in model.named_parameters()}
    assert parameters == {k for k, entry in table.items() if entry["kind"] == "parameter"}
