"""Each method's config section (``model.<name>``: its ``Settings`` dataclass) and its
:class:`~simsiam.methods.card.MethodCard`, torch-free: what the config layer reads before
any network is built. :data:`CARDS` is keyed as :data:`simsiam.methods.METHODS`."""

from __future__ import annotations

from simsiam.methods.card import MethodCard
from simsiam.methods.settings import byol, clip, mocov2, simclr, simsiam, swav
from simsiam.methods.settings.byol import BYOLConfig
from simsiam.methods.settings.clip import CLIPConfig
from simsiam.methods.settings.mocov2 import MoCoV2Config
from simsiam.methods.settings.simclr import SimCLRConfig
from simsiam.methods.settings.simsiam import SimSiamConfig
from simsiam.methods.settings.swav import SwAVConfig

CARDS: dict[str, MethodCard] = {m.CARD.name: m.CARD
                                for m in (simsiam, simclr, mocov2, byol, swav, clip)}

__all__ = ["BYOLConfig", "CARDS", "CLIPConfig", "MoCoV2Config", "SimCLRConfig",
           "SimSiamConfig", "SwAVConfig"]
