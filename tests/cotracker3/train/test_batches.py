"""Batches of clips, the data loader's workers, devices and distributed training (cotracker3/train/loop.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cotracker3.train.loop import (TrainConfig, TrainingError, batch_losses, build_model, collate_clips,
                                   make_sample, resolve_device, step_loader, step_losses, train)

TINY = dict(window_len=8, model_resolution=(64, 64), latent_dim=32, hidden_size=32, num_heads=2, time_depth=1,
            space_depth=1, corr_hidden_dim=32, corr_embed_dim=16, num_virtual_tracks=4)
REPO = Path(__file__).resolve().parents[3]


def _config(**kw) -> TrainConfig:
    base = dict(steps=4, iters=2, num_points=16, min_frames=4, max_frames=8, scene_reuse=2, log_every=1,
                checkpoint_every=2, scene=dict(num_frames=8, height=64, width=64, num_points=48, supersample=1),
                model=dict(TINY), seed=3, batch_size=2)
    base.update(kw)
    return TrainConfig(**base)


def _grads(model) -> dict[str, torch.Tensor]:
    return {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_batch_of_two_is_the_mean_of_two_single_clip_gradients():
    config = _config()
    samples = [make_sample(config, 1, clip=c) for c in range(2)]
    assert samples[0][0].shape == samples[1][0].shape  # the clips of a step share their length
    assert not torch.equal(samples[0][0], samples[1][0])  # but are different clips
    torch.manual_seed(0)
    model = build_model(config)
    video, queries, tracks, vis, valid = collate_clips(samples)
    assert valid.all()
    batch_losses(model.forward_train(video, queries, 2), queries, tracks, vis, valid, online=False).total.backward()
    batched = _grads(model)
    singles = []
    for video, queries, tracks, vis in samples:
        model.zero_grad(set_to_none=True)
        step_losses(model.forward_train(video, queries, 2), queries, tracks, vis, online=False).total.backward()
        singles.append(_grads(model))
    assert batched.keys() == singles[0].keys() and len(batched) > 10
    for k in batched:
        mean = (singles[0][k] + singles[1][k]) / 2
        assert torch.allclose(batched[k], mean, rtol=1e-4, atol=1e-6), k


def test_padded_frames_and_points_count_in_no_loss():
    config = _config()
    a, b = make_sample(config, 0, clip=0), make_sample(config, 0, clip=1)
    b = (b[0][:, :-2], b[1][:, :5], b[2][:, :-2, :5], b[3][:, :-2, :5])  # shorter, fewer points
    video, queries, tracks, vis, valid = collate_clips([a, b])
    L, N = a[0].shape[1], a[1].shape[1]
    assert video.shape[:2] == (2, L) and queries.shape[:2] == (2, N) and valid.shape == (2, L, N)
    assert valid[0].all() and valid[1, :L - 2, :5].all() and not valid[1, L - 2:].any() and not valid[1, :, 5:].any()
    assert torch.equal(video[1, L - 2:], b[0][0, -1:].expand(2, -1, -1, -1))  # the last frame repeated
    torch.manual_seed(0)
    outputs = build_model(config).forward_train(video, queries, 2)
    loss = batch_losses(outputs, queries, tracks, vis, valid, online=False)
    # Garbage where the mask is False changes nothing; on a counted position it does.
    pad = ~valid[1]

    def spoiled(where):
        out = []
        for o in outputs:
            coords, v, c = o.coords.clone(), o.vis.clone(), o.conf.clone()
            coords[1][where] = 1e4
            v[1][where], c[1][where] = 0.5, 0.5
            out.append(o._replace(coords=coords, vis=v, conf=c))
        return batch_losses(out, queries, tracks, vis, valid, online=False)

    assert spoiled(pad).items() == loss.items()
    assert spoiled(valid[1]).items()["visible"] > loss.items()["visible"]


def test_the_loader_does_not_depend_on_the_worker_count():
    config = _config(steps=5, scene_reuse=3)
    alone = list(step_loader(config, 1))
    with_workers = list(step_loader(_config(steps=5, scene_reuse=3, workers=2), 1))
    assert len(alone) == len(with_workers) == 4 and all(len(step) == 2 for step in alone)
    for x, y in zip(alone, with_workers):
        for a, b in zip(x, y):
            assert all(torch.equal(u, v) for u, v in zip(a, b))
    # A process's share of a split batch is its part of the whole batch.
    share = list(step_loader(config, 1, rank=1, world=2))
    assert all(torch.equal(u, v) for s, whole in zip(share, alone) for u, v in zip(s[0], whole[1]))
    with pytest.raises(TrainingError, match="split evenly"):
        step_loader(_config(batch_size=3), 0, rank=0, world=2)


def test_devices():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(TrainingError, match="unknown device"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(TrainingError, match="no CUDA"):
            _config(device="cuda").check()


def _torchrun(config: TrainConfig, out: Path, tmp_path: Path) -> None:
    script = tmp_path / "run.py"
    script.write_text("import json, sys\nfrom cotracker3.train.loop import TrainConfig, train\n"
                      "train(TrainConfig(**json.loads(sys.argv[1])), sys.argv[2])\n")
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           str(script), json.dumps(config.__dict__), str(out)],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.mark.parametrize("steps", [1, 3])
def test_two_gloo_processes_train_the_weights_of_one_process(tmp_path, steps):
    """torchrun with 2 processes (DDP, gloo), each half of a batch of 2, against one process with the batch.

    The gradients agree to float precision (Adam's first moment after one step is 0.1 x the
    clipped gradient). The weights agree to float precision too, except where a gradient is
    float noise around 0: Adam's first steps move a weight by about lr x sign(gradient), so such
    an element may step the other way in the other run (0.1 % of the elements differ by more
    than 1e-5 after 3 steps, none by more than twice the largest step)."""
    config = _config(steps=steps, checkpoint_every=1)
    _torchrun(config, tmp_path / "ddp", tmp_path)
    train(config, tmp_path / "one")
    ddp = torch.load(tmp_path / "ddp" / "checkpoint.pt", weights_only=True)
    one = torch.load(tmp_path / "one" / "checkpoint.pt", weights_only=True)
    assert ddp["step"] == one["step"] == steps
    a, b = ddp["model"], one["model"]
    assert a.keys() == b.keys()
    assert not _same(a, build_model(config).state_dict())  # it trained
    if steps == 1:
        moments = [(ddp["optimizer"]["state"][i]["exp_avg"], one["optimizer"]["state"][i]["exp_avg"])
                   for i in one["optimizer"]["state"]]
        assert len(moments) > 10 and any(m.abs().max() > 1e-4 for m, _ in moments)
        for m_ddp, m_one in moments:
            assert torch.allclose(m_ddp, m_one, rtol=1e-3, atol=1e-8)
    lr = max(x["lr"] for x in map(json.loads, (tmp_path / "one" / "log.jsonl").read_text().splitlines()))
    diffs = torch.cat([(a[k] - b[k]).abs().flatten() for k in a if a[k].is_floating_point()])
    assert (diffs > 1e-5).float().mean() < 0.005 and diffs.max() <= 2 * steps * lr * 1.01
    logs = (tmp_path / "ddp" / "log.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in logs] == list(range(1, steps + 1))  # one process wrote the log


def test_checkpoints_are_written_with_cpu_tensors_and_module_records(tmp_path):
    """_save moves every tensor to the CPU (a GPU run's checkpoint loads anywhere) and keeps a
    state_dict's version records, so it loads back strictly."""
    from cotracker3.train.loop import _on_cpu, _save

    model = build_model(_config())
    payload = {"model": model.state_dict(), "nested": [torch.ones(2), (torch.zeros(1), 3)], "step": 7}
    out = _on_cpu(payload)
    assert hasattr(out["model"], "_metadata") and out["model"].keys() == payload["model"].keys()
    assert isinstance(out["nested"][1], tuple) and out["nested"][1][1] == 3 and out["step"] == 7
    _save(tmp_path / "c.pt", payload)
    loaded = torch.load(tmp_path / "c.pt", weights_only=True)
    assert all(v.device.type == "cpu" for v in loaded["model"].values())
    build_model(_config()).load_state_dict(loaded["model"], strict=True)
