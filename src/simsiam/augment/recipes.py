"""Each method's view recipe as its authors ran it, per scale.

A recipe gives every ``augment.*`` value the config leaves null (the defaults are null:
"the recipe's"). ``augment.recipe`` names it; ``auto`` (the default) is the run's
method's own. Values per view: ``blur_prob`` and ``solarize_prob`` are view 1's (and
every view after the second: SwAV's small crops, CLIP's single view), ``view2_blur_prob``
and ``view2_solarize_prob`` view 2's (BYOL's asymmetric pair). A ``blur_prob`` or
``solarize_prob`` the user gives sets both views unless the ``view2_*`` key is given too.

"Small" views are CIFAR-size, at most 32 px: there every author's CIFAR recipe drops the
Gaussian blur (SimSiam Appendix D; SimCLR Appendix B.9) and SimCLR halves its colour
strength (B.9: strength 0.5). Recipes with no CIFAR version from their authors (BYOL,
SwAV) keep their ImageNet values there, without blur, as solo-learn's CIFAR configs do.

Sources (read from the authors' code; the numbers, not the code):

- ``simsiam`` / ``mocov2``: SIMSIAM.md section 3 (facebookresearch/simsiam and moco
  ``main_*.py``, MoCo v2's ``aug_plus``): crop area 0.2-1, ColorJitter(0.4, 0.4, 0.4, 0.1)
  p 0.8, grayscale p 0.2, blur sigma 0.1-2 p 0.5, flip p 0.5.
- ``simclr``: google-research/simclr ``data_util.py``: Inception crop area 0.08-1 (ratio
  3/4-4/3), colour distortion of strength s (brightness, contrast, saturation 0.8 s, hue
  0.2 s; p 0.8; random order; ``simclrv2`` multiplicative brightness), grayscale p 0.2,
  blur p 0.5 on ImageNet (sigma 0.1-2), none on CIFAR; s = 1.0 on ImageNet, 0.5 on CIFAR.
- ``byol``: deepmind-research ``byol/utils/augmentations.py`` (``augment_config``): crop
  area 0.08-1, flip; jitter p 0.8 with brightness 0.4, contrast 0.4, saturation 0.2, hue
  0.1; grayscale p 0.2; blur p 1.0 on view 1 and 0.1 on view 2 (sigma 0.1-2); solarize p
  0.0 on view 1 and 0.2 on view 2 (threshold 0.5). BYOL's brightness adds a delta
  (``tf.image``-style) where torchvision multiplies by a factor; ours multiplies, as every
  PyTorch port (lightly, solo-learn) does.
- ``swav``: facebookresearch/swav ``src/multicropdataset.py``: every crop gets colour
  distortion of strength 1 (0.8, 0.8, 0.8, 0.2; p 0.8), grayscale p 0.2, blur p 0.5 (PIL
  radius 0.1-2), flip; large crops area 0.14-1, small 0.05-0.14 (``augment.small_*``).
- ``clip``: open_clip's training transform: a random crop of area 0.9-1, nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING, Any

from simsiam.errors import ConfigError

if TYPE_CHECKING:
    from simsiam.augment.config import AugmentConfig

CIFAR_SIZE = 32  # views of at most this side use the authors' CIFAR recipes


@dataclass(frozen=True)
class ViewRecipe:
    """The values of one recipe at one scale (probabilities in [0, 1], strengths as
    torchvision's ColorJitter, crop area as a fraction of the image)."""

    crop_scale: tuple[float, float]
    jitter_prob: float
    brightness: float
    contrast: float
    saturation: float
    hue: float
    grayscale_prob: float
    blur_prob: float
    view2_blur_prob: float
    solarize_prob: float
    view2_solarize_prob: float
    flip_prob: float


def _simsiam(size: int) -> ViewRecipe:
    blur = 0.0 if size <= CIFAR_SIZE else 0.5
    return ViewRecipe((0.2, 1.0), 0.8, 0.4, 0.4, 0.4, 0.1, 0.2, blur, blur, 0.0, 0.0, 0.5)


def _simclr(size: int) -> ViewRecipe:
    s, blur = (0.5, 0.0) if size <= CIFAR_SIZE else (1.0, 0.5)
    return ViewRecipe((0.08, 1.0), 0.8, 0.8 * s, 0.8 * s, 0.8 * s, 0.2 * s, 0.2, blur, blur,
                      0.0, 0.0, 0.5)


def _byol(size: int) -> ViewRecipe:
    blur1, blur2 = (0.0, 0.0) if size <= CIFAR_SIZE else (1.0, 0.1)
    return ViewRecipe((0.08, 1.0), 0.8, 0.4, 0.4, 0.2, 0.1, 0.2, blur1, blur2, 0.0, 0.2, 0.5)


def _swav(size: int) -> ViewRecipe:
    blur = 0.0 if size <= CIFAR_SIZE else 0.5
    return ViewRecipe((0.14, 1.0), 0.8, 0.8, 0.8, 0.8, 0.2, 0.2, blur, blur, 0.0, 0.0, 0.5)


def _clip(size: int) -> ViewRecipe:
    return ViewRecipe((0.9, 1.0), 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)


# recipe name -> the values at a view side (pixels)
RECIPES = {"simsiam": _simsiam, "mocov2": _simsiam, "simclr": _simclr, "byol": _byol,
           "swav": _swav, "clip": _clip}
RECIPE_KEYS = tuple(f.name for f in fields(ViewRecipe))
# the views of an augmenter built on a config whose recipe is "auto" and was never resolved
# for a method (a run's config always is: load_config resolves it once, from the card)
DEFAULT_RECIPE = "simsiam"


def recipe_values(name: str, image_size: int) -> ViewRecipe:
    """The recipe ``name`` at views of ``image_size`` px.

    Raises:
        KeyError: an unknown name (the config check names ``augment.recipe`` first).
    """
    return RECIPES[name](image_size)


def recipe_name(aug: AugmentConfig, own: str | None = None) -> str:
    """The recipe a config uses: ``augment.recipe``, or for ``auto`` ``own`` (the run's
    method's recipe, its card's ``view_recipe``, resolved once when the config is loaded);
    with no ``own`` (an augmenter built on its own config), :data:`DEFAULT_RECIPE`.

    Raises:
        ConfigError: ``own`` is not a recipe (the message lists :data:`RECIPES`).
    """
    if aug.recipe != "auto":
        return aug.recipe
    if own is None:
        return DEFAULT_RECIPE
    if own not in RECIPES:
        raise ConfigError(f"view recipe {own!r} is unknown: choose one of {tuple(RECIPES)}")
    return own


def resolve_views(aug: AugmentConfig, image_size: int, own: str | None = None,
                  ) -> AugmentConfig:
    """``aug`` with every null recipe value filled from its recipe (:func:`recipe_name`;
    ``own``: the recipe ``auto`` stands for, see the module docstring), and ``recipe`` set
    to the recipe's name: a copy, ``aug`` unchanged. A resolved ``aug`` comes back equal.

    The second view's blur and solarize follow a view-1 value given in ``aug`` when their
    own key is null (``--set augment.blur_prob=0`` switches blur off on both views).
    """
    name = recipe_name(aug, own)
    r = recipe_values(name, image_size)
    given: dict[str, Any] = {k: getattr(aug, k) for k in RECIPE_KEYS}
    for one, two in (("blur_prob", "view2_blur_prob"), ("solarize_prob", "view2_solarize_prob")):
        if given[two] is None and given[one] is not None:
            given[two] = given[one]
    filled = {k: (list(getattr(r, k)) if k == "crop_scale" else getattr(r, k))
              if v is None else v for k, v in given.items()}
    return replace(aug, recipe=name, **filled)


def asymmetric(aug: AugmentConfig) -> bool:
    """Whether the two views have different blur or solarize probabilities."""
    return (aug.blur_prob != aug.view2_blur_prob
            or aug.solarize_prob != aug.view2_solarize_prob)
