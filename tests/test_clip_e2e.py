"""CLIP end to end on the real captioned Flickr photographs: a short run learns (the loss
falls, held-out retrieval beats the random init), its exports feed ``retrieval``,
``zeroshot`` and ``knn``, and LiT starts from another run's backbone, locked."""

from __future__ import annotations

import json
import re

import pytest
import torch

from simsiam.cli import main

SMALL = ["--set", "model.clip.text_width=64", "--set", "model.clip.text_heads=2",
         "--set", "model.clip.text_layers=2", "--set", "model.clip.embed_dim=64",
         "--set", "model.clip.context_length=24", "--set", "data.image_size=32",
         "--set", "eval.label_free_images=64", "--set", "eval.knn_every=6",
         "--set", "optim.base_lr=0.002", "--set", "optim.warmup_epochs=1"]


@pytest.fixture(scope="module")
def clip_run(flickr_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("clip") / "run"
    folder = flickr_dir.parent  # a folder holding captions.csv: clip reads that table
    assert main(["pretrain", "--config", "clip-cpu", "--data", str(folder), "--out", str(out),
                 "--epochs", "6", "--no-progress", *SMALL]) == 0
    return out


def _evals(run) -> dict[int, dict]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return {r["epoch"]: r for r in map(json.loads, lines) if r["kind"] == "eval"}


@pytest.mark.slow
def test_a_short_real_run_lowers_the_loss_and_beats_random_init_at_retrieval(clip_run):
    records = [json.loads(x) for x in (clip_run / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if r["kind"] == "epoch"]
    assert len(losses) == 6 and losses[-1] < losses[0] - 0.1
    evals = _evals(clip_run)
    assert set(evals) == {0, 6}
    assert evals[0]["retrieval_images"] == 200 and evals[0]["retrieval_captions"] == 1000
    recall = {e: sum(v[f"retrieval_{d}_r{k}"] for d in ("i2t", "t2i") for k in (1, 5, 10))
              for e, v in evals.items()}
    assert recall[6] > recall[0] + 3.0, recall  # the six recalls (percent), summed
    assert "knn_top1" not in evals[6] and "copy_top1" in evals[6]  # no labels: label-free
    for name in ("backbone.safetensors", "backbone_init.safetensors",
                 "text_tower.safetensors", "text_tower_init.safetensors"):
        assert (clip_run / name).is_file(), name
    from simsiam.report import write_report

    summary = write_report(clip_run).read_text()
    assert (clip_run / "report" / "retrieval.png").is_file()
    assert f"| retrieval i2t R@10 | {evals[6]['retrieval_i2t_r10']:.1f}% at epoch 6" in summary


@pytest.mark.slow
def test_the_evaluation_commands_read_the_run(clip_run, cifar_dir, capsys):
    capsys.readouterr()
    assert main(["retrieval", "--checkpoint", str(clip_run), "--no-progress"]) == 0
    line = capsys.readouterr().out.splitlines()[0]
    last = _evals(clip_run)[6]
    want = " ".join(f"R@{k}={last[f'retrieval_i2t_r{k}']:.1f}%" for k in (1, 5, 10))
    assert line.startswith(f"retrieval i2t {want} t2i R@1=")  # the monitor's figures
    assert main(["retrieval", "--checkpoint", str(clip_run / "backbone_init.safetensors"),
                 "--no-progress"]) == 0
    first = _evals(clip_run)[0]
    assert f"R@10={first['retrieval_i2t_r10']:.1f}%" in capsys.readouterr().out
    assert main(["zeroshot", "--checkpoint", str(clip_run), "--data", str(cifar_dir),
                 "--per-class", "10", "--templates", "simple", "--no-progress"]) == 0
    out = capsys.readouterr().out
    m = re.search(r"zeroshot top1=([\d.]+)% top5=([\d.]+)%", out)
    assert m and 0 <= float(m[1]) <= float(m[2]) <= 100
    assert "100 images of" in out and "10 classes" in out
    assert main(["knn", "--checkpoint", str(clip_run), "--data", str(cifar_dir),
                 "--per-class", "20", "--test-per-class", "10", "--no-progress"]) == 0
    assert "knn: top1=" in capsys.readouterr().out
    # the training checkpoint too: the text tower and projections are CLIP's, left out
    assert main(["knn", "--checkpoint", str(clip_run / "checkpoints" / "last.pt"), "--data",
                 str(cifar_dir), "--per-class", "20", "--test-per-class", "10",
                 "--no-progress"]) == 0
    assert "knn: top1=" in capsys.readouterr().out
    # a folder holding captions.csv stands for it; the held-out split is the run's
    assert main(["retrieval", "--checkpoint", str(clip_run), "--data",
                 str(cifar_dir.parent / "flickr8k-1k"), "--no-progress"]) == 0
    assert capsys.readouterr().out.splitlines()[0] == line
    assert main(["retrieval", "--checkpoint", str(clip_run / "nothing")]) == 2
    assert "checkpoint '" in capsys.readouterr().err
    assert main(["zeroshot", "--checkpoint", str(clip_run), "--data", str(cifar_dir),
                 "--classnames", "names.txt"]) == 2
    assert "--classnames 'names.txt': no such file" in capsys.readouterr().err


@pytest.mark.slow
def test_lit_starts_from_the_image_backbone_of_another_run_and_keeps_it_locked(
        clip_run, flickr_dir, tmp_path):
    from safetensors.torch import load_file

    out = tmp_path / "lit"
    source = clip_run / "backbone.safetensors"
    assert main(["pretrain", "--config", "clip-cpu", "--data",
                 str(flickr_dir.parent / "captions.csv"), "--out", str(out), "--epochs", "1",
                 "--no-progress", *SMALL, "--set", f"model.image_init={clip_run}",
                 "--set", "model.lock_image=true", "--set", "eval.knn_every=0",
                 "--set", "optim.warmup_epochs=0"]) == 0
    start, end = load_file(str(source)), load_file(str(out / "backbone.safetensors"))
    assert start.keys() == end.keys()
    assert all(torch.equal(start[k], end[k]) for k in start)  # weights and BN statistics
    text_before = load_file(str(out / "text_tower_init.safetensors"))
    text_after = load_file(str(out / "text_tower.safetensors"))
    assert not torch.equal(text_before["image_projection.weight"],
                           text_after["image_projection.weight"])


@pytest.mark.slow
def test_a_resumed_clip_run_ends_with_the_weights_of_an_uninterrupted_one(flickr_dir, tmp_path):
    from safetensors.torch import load_file

    table = str(flickr_dir.parent / "captions.csv")
    common = ["pretrain", "--config", "clip-cpu", "--data", table, "--epochs", "2",
              "--no-progress", *SMALL, "--set", "eval.knn_every=0", "--set", "train.amp=fp32",
              "--set", "data.holdout_fraction=0.7"]  # 300 training pairs: 3 steps an epoch
    assert main([*common, "--out", str(tmp_path / "whole")]) == 0
    assert main([*common, "--out", str(tmp_path / "parts"), "--stop-after-epoch", "1"]) == 0
    assert not (tmp_path / "parts" / "text_tower.safetensors").exists()
    assert main([*common, "--out", str(tmp_path / "parts"), "--resume"]) == 0
    for name in ("backbone.safetensors", "text_tower.safetensors"):
        a, b = (load_file(str(tmp_path / run / name)) for run in ("whole", "parts"))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
