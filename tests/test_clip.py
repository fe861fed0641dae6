"""CLIP: the loss against its formula, the temperature, the tokenizer on real captions,
retrieval recall on known answers, zero-shot on a case built to be right, the locked
image tower (LiT), and the export that the evaluation commands read."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from simsiam.config import ModelConfig
from simsiam.data.tokens import END_TOKEN, START_TOKEN, clip_tokenizer, tokenize_captions
from simsiam.eval.retrieval import recall_at_k, retrieval_line
from simsiam.methods import CLIP, CLIPConfig, build_method

CAPTIONS = Path(__file__).resolve().parents[2] / "shared" / "data" / "flickr8k-1k" / "captions.csv"
TINY = CLIPConfig(embed_dim=16, context_length=12, text_width=32, text_heads=2, text_layers=1)


def _tiny(backbone: str = "resnet18") -> CLIP:
    torch.manual_seed(0)
    return build_method("clip", ModelConfig(backbone=backbone, stem="cifar", clip=TINY), 32)


def _direct_clip_loss(img: torch.Tensor, txt: torch.Tensor, scale: float) -> float:
    """Both directions of the CLIP paper's Figure 3, written out row by row."""
    img, txt = F.normalize(img, dim=1), F.normalize(txt, dim=1)
    n = len(img)
    total = 0.0
    for i in range(n):  # image i among all captions, caption i among all images
        li = [scale * float(img[i] @ txt[j]) for j in range(n)]
        lt = [scale * float(txt[i] @ img[j]) for j in range(n)]
        total += (math.log(sum(math.exp(v) for v in li)) - li[i]) / (2 * n)
        total += (math.log(sum(math.exp(v) for v in lt)) - lt[i]) / (2 * n)
    return total


def test_loss_is_the_symmetric_cross_entropy_at_the_learned_temperature():
    model = _tiny()
    g = torch.Generator().manual_seed(0)
    images = torch.randn(6, 3, 32, 32, generator=g)
    tokens = tokenize_captions([["a dog on grass"], ["two children"], ["a red car"],
                                ["snow"], ["a man surfing a wave"], ["a cat"]], 12)[0][:, 0]
    model.eval()  # BN with running statistics: encode_image gives the same features
    loss, metrics = model((images, tokens.long()))
    with torch.no_grad():
        img = model.encode_image(images)
        txt = model.encode_text(tokens.long())
    assert model.logit_scale.exp().item() == pytest.approx(1 / 0.07)
    assert loss.item() == pytest.approx(_direct_clip_loss(img, txt, 1 / 0.07), rel=1e-4)
    with torch.no_grad():  # another temperature: the loss follows it
        model.logit_scale.fill_(math.log(3.0))
    assert model((images, tokens.long()))[0].item() == pytest.approx(
        _direct_clip_loss(img, txt, 3.0), rel=1e-4)
    assert metrics["embedding"].shape == (6, 16) and metrics["features"].shape == (6, 512)
    assert metrics["embedding"].norm(dim=1).sub(1).abs().max() < 1e-5


def test_matching_pairs_lower_the_loss_and_the_logit_scale_is_clamped_at_100():
    model = _tiny()
    img, txt = torch.randn(8, 16), torch.randn(8, 16)
    scale = torch.tensor(10.0)
    assert model.loss(F.normalize(img, dim=1), F.normalize(img, dim=1), scale) < \
        model.loss(F.normalize(img, dim=1), F.normalize(txt, dim=1), scale)
    with torch.no_grad():
        model.logit_scale.fill_(math.log(500.0))
    model.on_step_end(0, 1)
    assert model.logit_scale.exp().item() == pytest.approx(100.0)
    with torch.no_grad():
        model.logit_scale.fill_(-2.0)
    model.on_step_end(0, 1)
    assert model.logit_scale.item() == 0.0  # open_clip clamps the log-scale to [0, ln 100]


def test_parameter_groups_decay_weights_only():
    model = _tiny()
    groups = {g["name"]: g for g in model.param_groups()}
    names = {id(p): n for n, p in model.named_parameters()}
    no_decay = {names[id(p)] for p in groups["no_decay"]["params"]}
    decay = {names[id(p)] for p in groups["decay"]["params"]}
    assert groups["no_decay"]["no_weight_decay"] and not groups["decay"]["no_weight_decay"]
    assert "logit_scale" in no_decay and "text.ln_final.weight" in no_decay
    assert "backbone.bn1.weight" in no_decay and "backbone.conv1.weight" in decay
    assert {"image_projection.weight", "text.token_embedding.weight",
            "text.text_projection"} <= decay
    assert decay.isdisjoint(no_decay) and len(decay) + len(no_decay) == len(names)


@pytest.mark.skipif(not CAPTIONS.is_file(), reason="flickr8k-1k captions not found")
def test_tokenizer_round_trip_on_real_captions_with_commas_quotes_and_non_ascii():
    with CAPTIONS.open(encoding="utf-8", newline="") as f:
        rows = [r["caption"] for r in csv.DictReader(f)]
    picked = [c for c in rows if "," in c][:3] + [c for c in rows if '"' in c][:2]
    picked += ["Café, naïve — 東京 at night"]
    assert len(picked) == 6
    tokenizer = clip_tokenizer(77)
    ids = tokenizer(picked)
    from open_clip import decode

    for caption, row in zip(picked, ids, strict=True):
        assert row[0] == START_TOKEN and END_TOKEN in row.tolist()
        text = decode(row[: row.tolist().index(END_TOKEN) + 1])
        text = text.replace("<start_of_text>", "").replace("<end_of_text>", "")
        # lower-cased, spaces around punctuation may move: the characters are the caption's
        assert "".join(text.split()) == "".join(caption.lower().split()), caption


def test_a_long_caption_is_cut_at_the_context_length_with_the_end_token_last():
    long = " ".join(["dog"] * 100)
    tokens, counts = tokenize_captions([[long, "a dog"], ["one"]], 16)
    assert tokens.shape == (2, 2, 16) and counts.tolist() == [2, 1]
    assert tokens[0, 0, 0] == START_TOKEN and tokens[0, 0, -1] == END_TOKEN
    assert (tokens[0, 0, 1:-1] != 0).all()  # every position holds a token
    assert tokens[0, 1, :4].tolist()[0] == START_TOKEN and tokens[0, 1, 3] == END_TOKEN
    assert (tokens[1, 1] == 0).all()  # image 1 has one caption: the second slot is empty


def test_recall_on_a_hand_built_similarity_matrix_with_five_captions_per_image():
    # 3 images, captions 0-4 -> image 0, 5-9 -> image 1, 10-14 -> image 2
    text_image = torch.arange(3).repeat_interleave(5)
    sim = torch.zeros(3, 15)
    sim[0, 7], sim[0, 3] = 0.9, 0.8      # image 0: rank 1 is image 1's caption, rank 2 its own
    sim[1, 5:10] = torch.linspace(0.5, 0.9, 5)  # image 1: its own five on top
    sim[2, :] = -torch.arange(15.0)      # image 2: captions 0..14 in order; its own at 11-15
    out = recall_at_k(sim, text_image, ks=(1, 2, 10, 11))
    assert out["i2t_r1"] == pytest.approx(100 / 3)  # only image 1
    assert out["i2t_r2"] == pytest.approx(200 / 3)  # + image 0
    assert out["i2t_r10"] == pytest.approx(200 / 3) and out["i2t_r11"] == pytest.approx(100.0)
    # text -> image: caption t's images ranked by sim[:, t]
    t2i_top1 = sim.argmax(dim=0)
    want = 100.0 * (t2i_top1 == text_image).float().mean().item()
    assert out["t2i_r1"] == pytest.approx(want)
    assert out["t2i_r11"] == pytest.approx(100.0)  # k capped at the 3 images
    line = retrieval_line({f"retrieval_{k}": v for k, v in
                           recall_at_k(sim, text_image).items()})
    assert line.startswith("retrieval i2t R@1=33.3% R@5=66.7% R@10=66.7% t2i R@1=")
    with pytest.raises(ValueError, match="outside"):
        recall_at_k(sim, torch.full((15,), 3))


class _MeanColour(nn.Module):
    """A stand-in image tower: the mean of each input channel, ``(B, 3)``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))


def test_zeroshot_is_right_when_the_towers_are_set_to_agree():
    from simsiam.eval.zeroshot import zeroshot_accuracy, zeroshot_classifier

    torch.manual_seed(0)
    model = CLIP(_MeanColour(), 3, embed_dim=16, context_length=12, text_width=32,
                 text_heads=2, text_layers=1).eval()
    names, templates = ["red", "green", "blue"], ["a photo of a {}.", "a {} thing."]
    weights = zeroshot_classifier(model, names, templates)  # (16, 3), unit columns
    assert weights.shape == (16, 3)
    assert torch.allclose(weights.norm(dim=0), torch.ones(3), atol=1e-5)
    # images of class k: channel k at 255, the others 0
    images = np.zeros((6, 8, 8, 3), np.uint8)
    labels = np.array([0, 1, 2, 2, 1, 0])
    images[np.arange(6), :, :, labels] = 255
    from simsiam.eval.knn import eval_transform

    feats = eval_transform(torch.from_numpy(images[[0, 1, 2]]), 8, "imagenet").mean(dim=(2, 3))
    with torch.no_grad():  # the projection that sends class k's mean colour to its prompts
        model.image_projection.weight.copy_(weights @ torch.linalg.inv(feats.t()))
    res = zeroshot_accuracy(model, images, labels, names, templates, 8, "imagenet")
    assert res["top1"] == 100.0 and res["top5"] == 100.0 and res["templates"] == 2
    shifted = zeroshot_accuracy(model, images, (labels + 1) % 3, names, templates, 8,
                                "imagenet")
    assert shifted["top1"] == 0.0  # the wrong names for every image


def test_locked_image_tower_keeps_weights_and_bn_statistics_while_the_rest_learns():
    model = _tiny()
    model.lock_image()
    model.train()
    assert not model.backbone.training and model.text.training
    before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    proj = model.image_projection.weight.clone()
    opt = torch.optim.SGD(model.param_groups(), lr=0.1)
    assert all(not p.requires_grad for p in model.backbone.parameters())
    assert sum(len(g["params"]) for g in opt.param_groups) == len(
        [p for p in model.parameters() if p.requires_grad])
    g = torch.Generator().manual_seed(0)
    for _ in range(2):
        tokens = torch.randint(1, 49000, (4, 12), generator=g)
        loss, _ = model((torch.randn(4, 3, 32, 32, generator=g), tokens))
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = model.backbone.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # incl. running_mean/var
    assert not torch.equal(proj, model.image_projection.weight)


def test_export_extras_hold_everything_but_the_backbone():
    model = _tiny()
    extras = model.export_extras()["text_tower"]
    assert "logit_scale" in extras and "image_projection.weight" in extras
    assert not any(k.startswith("backbone.") for k in extras)
    assert set(extras) | {f"backbone.{k}" for k in model.backbone.state_dict()} == set(
        model.state_dict())


def test_prompt_templates_are_the_papers():
    from open_clip import OPENAI_IMAGENET_TEMPLATES

    from simsiam.eval.zeroshot import CIFAR10_CLASSES, templates

    cifar = templates("auto", CIFAR10_CLASSES)
    assert len(cifar) == 18 and cifar[0] == "a photo of a {}."
    assert cifar[8] == "a photo of a big {}." and cifar[-1] == "a photo of the big {}."
    assert templates("auto", ["dog", "cat"]) is OPENAI_IMAGENET_TEMPLATES
    assert len(OPENAI_IMAGENET_TEMPLATES) == 80


def test_bench_times_clip_on_captions_batches():
    from simsiam.bench import run_bench
    from simsiam.config import load_config

    cfg = load_config("clip-cpu", {"data.image_size": 32, "train.batch_size": 8,
                                   "train.amp": "fp32", "model.clip.text_width": 32,
                                   "model.clip.text_heads": 2, "model.clip.text_layers": 1,
                                   "model.clip.context_length": 8})
    images = np.random.default_rng(0).integers(0, 256, (16, 32, 32, 3), dtype=np.uint8)
    res = run_bench(cfg, images, warmup=1, windows=1, steps_per_window=1)
    assert min(res.data[0], res.model[0], res.full[0]) > 0


def test_clip_on_images_without_captions_is_refused_naming_the_source():
    from simsiam.config import load_config
    from simsiam.data.dataset import ImageSet
    from simsiam.data.loaders import make_batches
    from simsiam.errors import ConfigError, DataError

    for source in ("photos/", "cifar10"):  # refused when the config is read
        with pytest.raises(ConfigError, match=f"method 'clip' learns from captions, and "
                           f"data.source = '{source}' has none: pass --data a caption table"):
            load_config("clip-cpu", {"data.source": source})
    cfg = load_config("clip-cpu", {"data.source": "x.csv"})
    cfg.data.source = "photos/"  # and by the loader, should a config bypass that check
    images = ImageSet(np.zeros((4, 8, 8, 3), np.uint8), np.zeros(4, np.int64), [""], [""] * 4)
    with pytest.raises(DataError, match="method 'clip' learns from captions, and data.source = "
                       "'photos/' has none: pass --data a caption table"):
        make_batches("captions", images, cfg, torch.device("cpu"))
