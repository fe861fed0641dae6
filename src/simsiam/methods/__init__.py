"""Self-supervised methods: each owns its heads, loss, config section and rules.

Every method is a :class:`~simsiam.methods.base.Method` (see that module for the
interface) registered in :data:`METHODS` (:mod:`.registry`) under the name of its config
section ``model.<name>``. Its section (the ``Settings`` dataclass) and its card (published
settings, view recipe, batch kind and options) are torch-free, in
:mod:`simsiam.methods.settings`, so that the config loads without torch. Adding a method
is one file with its class, one with its settings and card, and one entry in
:mod:`.registry`, :mod:`.settings` and :class:`simsiam.config.schema.ModelConfig`.

Public names are imported on first use (PEP 562), so that importing
``simsiam.methods.settings`` does not import torch.
"""

from __future__ import annotations

from simsiam.lazy import LazyExports

_EXPORTS = {
    "Method": "base", "RunShape": "base", "Traits": "base", "param_group": "base",
    "step_metrics": "base", "small_images": "card", "MethodCard": "card",
    "BYOL": "byol", "CLIP": "clip", "MoCoV2": "mocov2", "SimCLR": "simclr",
    "SimSiam": "simsiam", "SimSiamOutput": "simsiam", "SwAV": "swav",
    "BYOLConfig": "settings", "CLIPConfig": "settings", "MoCoV2Config": "settings",
    "SimCLRConfig": "settings", "SimSiamConfig": "settings", "SwAVConfig": "settings",
    "CARDS": "settings",
    "cross_entropy_similarity": "losses", "negative_cosine": "losses",
    "siamese_loss": "losses", "symmetric_negative_cosine": "losses",
    "METHODS": "registry", "TRAITS": "registry", "build_method": "registry",
    "method_class": "registry", "batch_options": "registry",
}

__all__ = sorted(_EXPORTS)

_LAZY = LazyExports(__name__, _EXPORTS)
__getattr__ = _LAZY.attribute
__dir__ = _LAZY.names
