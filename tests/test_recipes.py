"""Each method's view recipe: the drawn parameters follow its authors' distributions per
view (rates of jitter, grayscale, blur, solarize; crop areas; jitter ranges), on the
batched and the per-image paths; solarize equals torchvision's; the config resolves the
method's recipe, and a user's value replaces it."""

from __future__ import annotations

import math

import pytest
import torch
from torchvision.transforms.v2 import functional as TF

from simsiam.augment import batched as B
from simsiam.augment.multicrop import BatchedMultiCrop
from simsiam.augment.recipes import recipe_values, resolve_views
from simsiam.augment.views import ViewAugment, ViewParams
from simsiam.config import AugmentConfig, load_config
from simsiam.errors import ConfigError

# (recipe, view side) -> per view (jitter, grayscale, blur, solarize), crop area range,
# jitter strengths (brightness, contrast, saturation, hue): the authors' values.
EXPECTED = {
    ("simsiam", 224): ([(0.8, 0.2, 0.5, 0.0)] * 2, (0.2, 1.0), (0.4, 0.4, 0.4, 0.1)),
    ("simsiam", 32): ([(0.8, 0.2, 0.0, 0.0)] * 2, (0.2, 1.0), (0.4, 0.4, 0.4, 0.1)),
    ("mocov2", 224): ([(0.8, 0.2, 0.5, 0.0)] * 2, (0.2, 1.0), (0.4, 0.4, 0.4, 0.1)),
    ("simclr", 224): ([(0.8, 0.2, 0.5, 0.0)] * 2, (0.08, 1.0), (0.8, 0.8, 0.8, 0.2)),
    ("simclr", 32): ([(0.8, 0.2, 0.0, 0.0)] * 2, (0.08, 1.0), (0.4, 0.4, 0.4, 0.1)),
    ("byol", 224): ([(0.8, 0.2, 1.0, 0.0), (0.8, 0.2, 0.1, 0.2)], (0.08, 1.0),
                    (0.4, 0.4, 0.2, 0.1)),
    ("byol", 32): ([(0.8, 0.2, 0.0, 0.0), (0.8, 0.2, 0.0, 0.2)], (0.08, 1.0),
                   (0.4, 0.4, 0.2, 0.1)),
    ("swav", 224): ([(0.8, 0.2, 0.5, 0.0)] * 2, (0.14, 1.0), (0.8, 0.8, 0.8, 0.2)),
    ("clip", 224): ([(0.0, 0.0, 0.0, 0.0)] * 2, (0.9, 1.0), (0.0, 0.0, 0.0, 0.0)),
}


def _close(rate: float, prob: float, n: int) -> bool:
    if prob in (0.0, 1.0):
        return rate == prob
    return abs(rate - prob) < 4.5 * math.sqrt(prob * (1 - prob) / n)


@pytest.mark.parametrize("name,size", list(EXPECTED))
def test_batched_draws_follow_the_authors_distributions(name, size):
    per_view, (lo, hi), strengths = EXPECTED[(name, size)]
    aug = B.BatchedViewAugment(AugmentConfig(recipe=name), size)
    n, side = 20000, 2 * size
    g = torch.Generator().manual_seed(0)
    for view, rates in enumerate(per_view):
        p = aug.sample(g, n, side, side, view=view)
        drawn = (p.jitter, p.grayscale, p.blur,
                 p.solarize if p.solarize is not None else torch.zeros(n, dtype=torch.bool))
        for field, flags, prob in zip(("jitter", "grayscale", "blur", "solarize"), drawn,
                                      rates, strict=True):
            assert _close(flags.float().mean().item(), prob, n), (name, size, view, field)
        area = (p.height * p.width).double() / side ** 2
        assert area.min() >= lo * 0.9 and area.max() <= hi + 1e-9
        assert area.min() < lo + 0.02 and area.max() > hi - 0.02  # the whole range is drawn
        b, c, s, h = strengths
        f = p.factors
        for k, strength in enumerate((b, c, s)):
            assert f[:, k].min() >= max(0.0, 1 - strength) - 1e-6
            assert f[:, k].max() <= 1 + strength + 1e-6
            if strength:
                assert f[:, k].max() > 1 + 0.95 * strength  # the full strength is drawn
        assert f[:, 3].abs().max() <= h + 1e-6
        assert _close(p.flip.float().mean().item(), 0.0 if name == "clip" else 0.5, n)


@pytest.mark.parametrize("name", ["byol", "simclr"])
def test_per_image_path_draws_the_same_rates(name):
    per_view, (lo, _), _ = EXPECTED[(name, 224)]
    aug = ViewAugment(AugmentConfig(recipe=name), 224)
    n = 3000
    g = torch.Generator().manual_seed(1)
    for view, (_, gray, blur, sol) in enumerate(per_view):
        ps = [aug.sample(g, 256, 256, view) for _ in range(n)]
        assert _close(sum(p.grayscale for p in ps) / n, gray, n)
        assert _close(sum(p.blur_sigma is not None for p in ps) / n, blur, n)
        assert _close(sum(p.solarize for p in ps) / n, sol, n)
        assert min(p.height * p.width for p in ps) / 256 ** 2 < lo + 0.03


def test_a_recipe_without_solarize_draws_simsiams_stream():
    """Recipes that never solarize make no extra draw, so SimSiam's views are unchanged."""
    aug = B.BatchedViewAugment(AugmentConfig(), 64)
    p = aug.sample(torch.Generator().manual_seed(3), 50, 80, 80, view=1)
    assert p.solarize is None
    g = torch.Generator().manual_seed(3)
    top, *_ = B.sample_crops(g, 50, 80, 80, (0.2, 1.0), (3 / 4, 4 / 3))
    u = torch.rand(50, 9, generator=g)
    assert torch.equal(p.top, top) and torch.equal(p.flip, u[:, 8] < 0.5)


def test_solarize_equals_torchvision_and_is_the_last_colour_step():
    x = torch.rand(6, 3, 10, 12, generator=torch.Generator().manual_seed(2))
    sel = torch.tensor([True, False, True, True, False, True])
    out = B.solarize(x, sel)
    for i in range(6):
        ref = TF.solarize(x[i], 0.5) if sel[i] else x[i]
        assert torch.equal(out[i], ref)
    # the per-image path applies it after blur: a solarized identity view is 1 - x above 0.5
    aug = ViewAugment(AugmentConfig(recipe="byol", normalize="cifar10"), 8)
    img = torch.randint(0, 256, (3, 8, 8), dtype=torch.uint8,
                        generator=torch.Generator().manual_seed(0))
    vp = ViewParams(0, 0, 8, 8, False, [0, 1, 2, 3], 1.0, 1.0, 1.0, 0.0, False, None, False,
                    solarize=True)
    got = aug.apply(img, vp)
    mean, std = torch.tensor(aug.mean).view(3, 1, 1), torch.tensor(aug.std).view(3, 1, 1)
    expected = (TF.solarize(img.float() / 255, 0.5) - mean) / std
    assert torch.allclose(got, expected, atol=1e-5)


def test_batched_byol_views_equal_the_per_image_path_with_solarize():
    cfg = AugmentConfig(recipe="byol")
    batched, per_image = B.BatchedViewAugment(cfg, 40), ViewAugment(cfg, 40)
    imgs = torch.randint(0, 256, (48, 3, 44, 44), dtype=torch.uint8,
                         generator=torch.Generator().manual_seed(5))
    p = batched.sample(torch.Generator().manual_seed(6), 48, 44, 44, view=1)
    assert p.solarize is not None and p.solarize.any() and p.blur.any()
    out = batched.apply(imgs, p)
    for i in range(48):
        f = p.factors[i].tolist()
        vp = ViewParams(int(p.top[i]), int(p.left[i]), int(p.height[i]), int(p.width[i]),
                        bool(p.jitter[i]), p.order[i].tolist(), f[0], f[1], f[2], f[3],
                        bool(p.grayscale[i]), float(p.sigma[i]) if p.blur[i] else None,
                        bool(p.flip[i]), bool(p.solarize[i]))
        ref = per_image.apply(imgs[i].float() / 255, vp)
        # solarize flips values at the 0.5 threshold: a pixel within rounding of it may
        # land on either side, so compare all but a handful of pixels
        assert ((out[i] - ref).abs() > 4e-3).float().mean() < 0.01, i


def test_multicrop_small_crops_take_view_ones_values_and_their_own_area():
    cfg = AugmentConfig(recipe="byol", small_crops=2)
    mc = BatchedMultiCrop(cfg, 224)
    assert mc.large_aug.blur_probs == (1.0, 0.1) and mc.small_aug.blur_probs == (1.0, 0.1)
    assert mc.small_aug.cfg.crop_scale == [0.05, 0.14]
    assert mc.large_aug.cfg.crop_scale == [0.08, 1.0]


def test_user_values_replace_the_recipe_and_view1_values_set_both_views():
    r = resolve_views(AugmentConfig(blur_prob=0.0), 224, "byol")
    assert (r.blur_prob, r.view2_blur_prob) == (0.0, 0.0)
    assert (r.solarize_prob, r.view2_solarize_prob) == (0.0, 0.2)  # untouched: the recipe's
    r = resolve_views(AugmentConfig(view2_blur_prob=0.3), 224, "byol")
    assert (r.blur_prob, r.view2_blur_prob) == (1.0, 0.3)
    r = resolve_views(AugmentConfig(recipe="simclr", crop_scale=[0.3, 1.0]), 224, "byol")
    assert r.recipe == "simclr" and r.crop_scale == [0.3, 1.0] and r.brightness == 0.8
    assert recipe_values("mocov2", 224) == recipe_values("simsiam", 224)


def test_config_takes_the_methods_recipe_and_records_it(tmp_path):
    byol = load_config("demo-cpu", {"method": "byol"})
    a = byol.augment
    assert a.recipe == "byol" and a.crop_scale == [0.08, 1.0] and a.saturation == 0.2
    assert (a.solarize_prob, a.view2_solarize_prob) == (0.0, 0.2)
    assert (a.blur_prob, a.view2_blur_prob) == (0.0, 0.0)  # 32 px: no blur (CIFAR)
    assert load_config("imagenet", {"method": "byol", "data.source": "x"}).augment \
        .view2_blur_prob == 0.1
    simsiam = load_config("demo-cpu").augment
    assert simsiam.recipe == "simsiam" and simsiam.crop_scale == [0.2, 1.0]
    over = load_config("demo-cpu", {"method": "simclr", "augment.brightness": 0.1}).augment
    assert over.brightness == 0.1 and over.contrast == 0.4 and over.crop_scale == [0.08, 1.0]
    with pytest.raises(ConfigError, match="augment.recipe"):
        load_config("demo-cpu", {"augment.recipe": "dino"})


def test_a_config_yaml_from_before_recipes_keeps_simsiams_views(tmp_path):
    """A run's config.yaml written before the recipes (every augment key but recipe, blur
    left null) resumes with the views it trained with, whatever its method."""
    old = tmp_path / "config.yaml"
    old.write_text("method: byol\naugment:\n  crop_scale: [0.2, 1.0]\n  jitter_prob: 0.8\n"
                   "  brightness: 0.4\n  contrast: 0.4\n  saturation: 0.4\n  hue: 0.1\n"
                   "  grayscale_prob: 0.2\n  blur_prob: null\n  flip_prob: 0.5\n"
                   "  backend: batched\ndata:\n  image_size: 224\n  source: x\n")
    a = load_config(old).augment
    assert a.recipe == "simsiam" and a.saturation == 0.4
    assert (a.blur_prob, a.view2_blur_prob, a.solarize_prob, a.view2_solarize_prob) == \
        (0.5, 0.5, 0.0, 0.0)


def test_a_method_switch_on_a_runs_config_gives_the_new_method_its_recipe(tmp_path):
    """A run's config.yaml records every view value (recipe byol); --method swav on it
    takes SwAV's recipe for the values that were BYOL's, and keeps one the user changed."""
    import warnings

    from simsiam.config import config_to_yaml
    from simsiam.errors import ConfigNotice

    run = tmp_path / "config.yaml"
    run.write_text(config_to_yaml(load_config("demo-cpu", {"method": "byol",
                                                           "augment.hue": 0.05})))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConfigNotice)
        a = load_config(run, {"method": "swav"}).augment
    assert a.recipe == "swav" and a.crop_scale == [0.14, 1.0] and a.saturation == 0.8
    assert (a.solarize_prob, a.view2_solarize_prob) == (0.0, 0.0)
    assert a.hue == 0.05 and a.small_crops == 6  # the user's value; SwAV's crops
    # a recipe chosen apart from the method stays on a switch
    run.write_text(config_to_yaml(load_config("demo-cpu", {"method": "byol",
                                                           "augment.recipe": "simclr"})))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConfigNotice)
        assert load_config(run, {"method": "mocov2"}).augment.recipe == "simclr"


def test_the_cpu_preset_says_which_published_optimizer_it_holds_back():
    from simsiam.errors import ConfigNotice

    with pytest.warns(ConfigNotice, match=r"byol's published optimizer settings \(optimizer "
                                          r"lars, base_lr 0.2.*method_optimizer=true"):
        load_config("demo-cpu", {"method": "byol"})


def test_the_startup_views_line_names_the_recipe_per_view_and_small_crops():
    from simsiam.train.summary import _recipe_words

    byol = resolve_views(AugmentConfig(), 224, "byol")
    words = _recipe_words(byol, 224)
    assert words == ("recipe byol: crop area 0.08-1, jitter 0.4/0.4/0.2/0.1 p 0.8, blur p "
                     "1/0.1 (views 1/2), solarize p 0/0.2 (views 1/2)")
    swav = resolve_views(AugmentConfig(small_crops=6), 32, "swav")
    assert _recipe_words(swav, 32).endswith(", blur p 0, + 6 small crops of 14 px, area "
                                            "0.05-0.14")
