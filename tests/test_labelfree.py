"""Label-free signals (alignment, uniformity, augmented-copy retrieval), unlabelled folders,
the start-up summary and the preset cap warning."""

import math
import warnings

import numpy as np
import pytest
import torch

from simsiam.config import DataConfig, load_config
from simsiam.data import CapWarning, load_data
from simsiam.eval.labelfree import FixedViews, alignment, copy_retrieval, uniformity
from simsiam.eval.monitor import label_free_record


def test_alignment_against_its_formula():
    x = torch.tensor([[3.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    y = torch.tensor([[0.0, 1.0], [0.0, 5.0], [-1.0, -1.0]])
    # rows are normalised: squared distances 2, 0 and 4 (opposite points)
    assert alignment(x, y).item() == pytest.approx((2 + 0 + 4) / 3)
    assert alignment(x, y, alpha=1.0).item() == pytest.approx((math.sqrt(2) + 0 + 2) / 3)
    with pytest.raises(ValueError, match="same shape|one shape"):
        alignment(x, y[:2])


def test_uniformity_against_its_formula():
    x = torch.tensor([[2.0, 0.0], [-1.0, 0.0], [0.0, 7.0]])
    # pairwise squared distances of the normalised rows: 4, 2, 2
    expected = math.log((math.exp(-2 * 4) + 2 * math.exp(-2 * 2)) / 3)
    assert uniformity(x).item() == pytest.approx(expected, rel=1e-5)
    assert uniformity(x, t=1.0).item() == pytest.approx(
        math.log((math.exp(-4) + 2 * math.exp(-2)) / 3), rel=1e-5)
    assert uniformity(torch.ones(5, 3)).item() == pytest.approx(0.0, abs=1e-6)  # collapsed
    with pytest.raises(ValueError, match="N >= 2"):
        uniformity(torch.ones(1, 3))


def test_copy_retrieval_on_a_constructed_case():
    gallery = torch.eye(6)
    # queries 0..3 are noisy copies of rows 0..3; query 4 looks like row 5 more than row 4,
    # and its own row is its second choice; query 5 points away from its row entirely
    queries = torch.eye(6)[[0, 1, 2, 3, 5, 0]] * 2 + 0.1 * torch.eye(6)[[1, 2, 3, 4, 4, 1]]
    queries[4] = torch.tensor([0, 0, 0, 0, 0.5, 1.0])
    queries[5] = torch.tensor([2, 0.1, 0, 0, 0, -1.0])
    targets = torch.tensor([0, 1, 2, 3, 4, 5])
    hits = copy_retrieval(queries, gallery, targets, (1, 2, 5))
    assert hits[1] == pytest.approx(100 * 4 / 6)
    assert hits[2] == pytest.approx(100 * 5 / 6)
    assert hits[5] == pytest.approx(100 * 5 / 6)  # query 5's own row is its last choice
    # k above the gallery size counts every query
    assert copy_retrieval(queries, gallery, targets, (10,))[10] == 100.0
    with pytest.raises(ValueError, match="targets must index"):
        copy_retrieval(queries, gallery, targets + 1)


def test_label_free_record_searches_held_out_and_training_images():
    torch.manual_seed(0)
    queries, bank = torch.randn(10, 32), torch.randn(30, 32)
    # the views are exact copies of held-out images 0..3: all found first
    views = (queries[:4].clone(), queries[:4] + 1e-3)
    rec = label_free_record(bank, queries, views, rank_rows=1024)
    assert rec["copy_top1"] == 100.0 and rec["copy_queries"] == 8
    assert rec["copy_gallery"] == 40 and rec["alignment"] < 1e-5
    assert rec["uniformity"] == pytest.approx(uniformity(queries).item())
    assert 1 <= rec["feature_rank"] <= 10
    # a view that matches a training image instead is a miss
    views = (bank[:4].clone(), bank[:4].clone())
    assert label_free_record(bank, queries, views, 1024)["copy_top1"] == 0.0


def test_fixed_views_are_the_same_at_every_evaluation():
    from simsiam.augment.views import SimSiamAugment
    from simsiam.config import AugmentConfig

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (5, 40, 40, 3), dtype=np.uint8)
    aug = SimSiamAugment(AugmentConfig(normalize="imagenet"), 32)
    views = FixedViews(images, aug, seed=3, count=4)
    a1, b1 = views.views(0, 4)
    a2, b2 = FixedViews(images, aug, seed=3, count=4).views(0, 4)
    assert len(views) == 4 and a1.shape == (4, 3, 32, 32)
    assert torch.equal(a1, a2) and torch.equal(b1, b2) and not torch.equal(a1, b1)
    other, _ = FixedViews(images, aug, seed=4, count=4).views(0, 4)
    assert not torch.equal(a1, other)


def _photo_folder(root, flickr_dir, n):
    """A flat folder of ``n`` real photographs (symbolic links: nothing is copied)."""
    root.mkdir()
    for p in sorted(flickr_dir.iterdir())[:n]:
        (root / p.name).symlink_to(p)
    return root


def test_preset_cap_warning_names_both_numbers(tmp_path, flickr_dir):
    folder = _photo_folder(tmp_path / "mine", flickr_dir, 30)
    cfg = DataConfig(source=str(folder), image_size=16, per_class=20)
    with pytest.warns(CapWarning, match="keeps 20 of the 27 training images"):
        splits = load_data(cfg, progress=False)
    assert (splits.found, splits.held_out, splits.capped) == (30, 3, 7)
    assert len(splits.train) == 20 and not splits.train.labelled
    with warnings.catch_warnings():
        warnings.simplefilter("error", CapWarning)  # no cap, no warning
        load_data(DataConfig(source=str(folder), image_size=16), progress=False)


def test_labels_none_makes_a_labelled_folder_unlabelled(cifar_dir):
    cfg = DataConfig(source=str(cifar_dir), image_size=32, per_class=2, test_per_class=1)
    assert load_data(cfg, progress=False).train.labelled
    cfg.labels = "none"
    splits = load_data(cfg, progress=False)
    assert not splits.train.labelled and not splits.test.labelled
    assert splits.train.classes == [""] and set(splits.train.labels) == {0}


@pytest.mark.slow
def test_one_class_folder_reports_label_free_signals_and_no_accuracy(tmp_path, flickr_dir,
                                                                     capsys):
    from safetensors.torch import load_file

    from simsiam.cli import main
    from simsiam.train.logger import read_metrics

    folder = _photo_folder(tmp_path / "mine", flickr_dir, 40)
    out = tmp_path / "run"
    code = main(["pretrain", "--config", "demo-cpu", "--data", str(folder), "--out", str(out),
                 "--epochs", "2", "--batch-size", "16", "--no-progress",
                 "--set", "eval.knn_every=1", "--set", "model.simsiam.dim=256",
                 "--set", "model.simsiam.proj_hidden_dim=256"])
    assert code == 0
    printed = capsys.readouterr().out
    assert ("40 found, 0 of the 40 decoded skipped (undecodable), 4 held out for evaluation"
            in printed)
    assert "labels    none (one class" in printed and "ImageNet" not in printed
    assert "CIFAR-10 mean (0.4914, 0.4822, 0.4465)" in printed
    assert "knn_top1" not in printed and "probe top1" not in printed
    assert "epoch 0 (random init): copy top1" in printed
    assert "epoch 1/2: loss" in printed and "epoch 2/2: loss" in printed
    records = read_metrics(out)
    assert not any("knn_top1" in r or "online_probe_top1" in r or
                   "online_probe_train_top1" in r for r in records)
    evals = [r for r in records if r["kind"] == "eval"]
    assert [r["epoch"] for r in evals] == [0, 1, 2]
    for r in evals:
        assert r["labelled"] is False and r["copy_queries"] == 8 and r["copy_gallery"] == 40
        assert 0 <= r["copy_top1"] <= r["copy_top5"] <= 100
        assert 0 <= r["alignment"] <= 4 and -4 <= r["uniformity"] <= 0
    setup = next(r for r in records if r["kind"] == "setup")
    assert (setup["images_found"], setup["images_held_out"], setup["train_images"]) == (40, 4, 36)
    # the random-init baseline is kept, and differs from the trained weights
    init, final = load_file(str(out / "backbone_init.safetensors")), load_file(
        str(out / "backbone.safetensors"))
    assert init.keys() == final.keys()
    assert not torch.equal(init["conv1.weight"], final["conv1.weight"])
    # the evaluation commands take it as it is: embed the untrained baseline
    emb = tmp_path / "init.npz"
    assert main(["embed", "--checkpoint", str(out / "backbone_init.safetensors"), "--data",
                 str(folder), "--out", str(emb), "--no-progress"]) == 0
    assert np.load(emb)["features"].shape == (40, 512)
    # and a kNN accuracy of one class is refused, naming the folder
    capsys.readouterr()
    assert main(["knn", "--checkpoint", str(out), "--data",  # a run directory will do
                 str(folder), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"'{folder}' has no labels" in err and "neighbors" in err


def test_startup_summary_of_a_labelled_source(cifar_dir):
    from simsiam.distributed import batch_plan
    from simsiam.train.summary import startup_summary

    cfg = load_config("demo-cpu", {"data.source": str(cifar_dir), "data.per_class": 20,
                                   "data.test_per_class": 5})
    splits = load_data(cfg.data, progress=False)
    plan = batch_plan(len(splits.train), 128, 1, cfg.optim.base_lr)
    text = startup_summary(splits, cfg, plan, "cpu", False)
    assert "50,000 found" in text and "49,800 capped by data.per_class = 20" in text
    assert "-> 200 training, 50 for evaluation (its test split (10,000 found))" in text
    assert "10 classes" in text and "1 per epoch x 6 epochs = 6" in text
    assert "lr 0.4 = base_lr 0.8 x 128/256" in text and "cpu, float32, 1 process" in text


def _readme_snippet(name: str) -> str:
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    after = text.split(f"<!-- snippet: {name}")[1]
    return after.split("```python\n", 1)[1].split("```", 1)[0]


def test_readme_torchvision_snippet_reproduces_embed_features(tmp_path, flickr_dir):
    """The README's torchvision code gives embed's features (cosine >= 0.999) on real
    photos of mixed sizes, with a backbone whose features tell the photos apart."""
    from simsiam.augment.views import eval_transform
    from simsiam.cli import main
    from simsiam.models.backbones import build_backbone
    from simsiam.train.checkpoint import Checkpointer

    folder = _photo_folder(tmp_path / "photos", flickr_dir, 16)
    cfg = load_config("demo-cpu", {"data.image_size": 96, "augment.normalize": "imagenet"})
    torch.manual_seed(0)
    backbone = build_backbone("resnet18", "imagenet")
    splits = load_data(DataConfig(source=str(folder), image_size=96, holdout_fraction=0.0),
                       progress=False)
    backbone.train()  # running BN statistics of photos: features that differ per photo
    with torch.no_grad():
        backbone(eval_transform(torch.from_numpy(np.array(splits.train.images)), 96,
                                "imagenet"))
    backbone.eval()
    run = tmp_path / "run"
    run.mkdir()
    ckpt = Checkpointer(run, _OneProcess(), 0).export_backbone(backbone, cfg)
    emb = tmp_path / "emb.npz"
    assert main(["embed", "--checkpoint", str(ckpt), "--data", str(folder), "--out", str(emb),
                 "--no-progress"]) == 0
    data = np.load(emb)
    code = _readme_snippet("embed-features")
    def cosines(snippet: str) -> list[float]:
        out = []
        for path, row in zip(data["paths"], data["features"], strict=True):
            scope: dict = {}
            exec(snippet.replace('"runs/photos-cpu/backbone.safetensors"', repr(str(ckpt)))
                 .replace('"photo.jpg"', repr(str(path))), scope)
            out.append(torch.nn.functional.cosine_similarity(
                scope["features"][0], torch.from_numpy(row), dim=0).item())
        return out

    exact = cosines(code)
    assert min(exact) >= 0.999, exact
    # a plain Resize(96) + CenterCrop(96) does not (the check above can fail)
    naive = code.replace('T.Resize(spec["resize"]), T.CenterCrop(spec["decode_crop"])',
                         'T.Resize(spec["crop"])')
    assert naive != code and min(cosines(naive)) < 0.99


class _OneProcess:
    """The distributed context of a single process (what Checkpointer needs)."""

    is_main = True

    def barrier(self) -> None:
        pass


def test_a_run_directory_stands_for_its_checkpoint(tmp_path):
    from simsiam.errors import CheckpointError
    from simsiam.eval.loading import resolve_run_checkpoint

    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    with pytest.raises(CheckpointError, match="without backbone.safetensors or "
                                              "checkpoints/last.pt"):
        resolve_run_checkpoint(run)
    (run / "checkpoints" / "last.pt").write_bytes(b"x")
    assert resolve_run_checkpoint(run) == run / "checkpoints" / "last.pt"
    (run / "backbone.safetensors").write_bytes(b"x")  # a finished run: its export
    assert resolve_run_checkpoint(run) == run / "backbone.safetensors"
    assert resolve_run_checkpoint(run / "x.pt") == run / "x.pt"  # files pass as they are
