"""CLIP: an image tower and a text tower trained so that an image and its caption meet.

Source: Radford et al. 2021, "Learning Transferable Visual Models From Natural Language
Supervision", section 2.3 and Figure 3 (symmetric cross-entropy over the batch's
image-text similarities, learnable temperature initialised to 0.07 and clipped so that
the logits are scaled by at most 100), section 2.5 (Adam with decoupled weight decay
on all weights but gains and biases, cosine schedule). The text tower, its tokenizer and
the loss are open_clip's (``open_clip_torch``: ``TextTransformer``, ``SimpleTokenizer``,
``ClipLoss`` with gathering across processes); the image tower is any of the project's
backbones (or ``timm/<name>``) followed by a linear projection without bias, as
open_clip's timm towers.

LiT (Zhai et al. 2022, "LiT: Zero-Shot Transfer with Locked-image text Tuning"): with
``model.image_init`` the image backbone starts from an exported ``backbone.safetensors``
of any method; with ``model.lock_image`` its weights and BatchNorm statistics stay as
loaded and only the projection, the text tower and the temperature learn.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from simsiam.distributed.ops import rank, world_size
from simsiam.errors import require
from simsiam.methods.base import Method, RunShape, Traits, nonempty, step_metrics
from simsiam.methods.settings.clip import CARD, CLIPConfig


def logit_scale_init(temperature: float) -> float:
    """log(1 / temperature): the stored parameter (CLIP section 2.5)."""
    return math.log(1.0 / temperature)


def _no_decay(name: str, p: torch.nn.Parameter) -> bool:
    """open_clip's rule (``open_clip_train/main.py``): gains, biases, norms and the logit
    scale take no weight decay (CLIP section 2.5: "all weights that are not gains or
    biases")."""
    return p.ndim < 2 or "bn" in name or "ln" in name or "bias" in name or "logit_scale" in name


class CLIP(Method):
    """The CLIP model: image tower, text tower, shared embedding, learnable temperature.

    Args:
        backbone: images ``(B, 3, H, W)`` -> features ``(B, feature_dim)``.
        feature_dim: c, the backbone's output width.
        embed_dim: width of the shared embedding (image projection ``c -> embed_dim``,
            no bias; the text tower's projection ``text_width -> embed_dim``).
        context_length, text_width, text_heads, text_layers: open_clip's
            ``TextTransformer`` (causal mask, end-of-text pooling, vocabulary 49,408).
        init_temperature: the logit scale starts at ``1 / init_temperature``.
        max_logit_scale: ``exp(logit_scale)`` is clamped to at most this after every step.

    Raises:
        ValueError: a non-positive width or temperature, ``text_width`` not divisible by
            ``text_heads``.
    """

    card = CARD
    name = CARD.name
    Settings = CLIPConfig
    traits = Traits(negatives=True, momentum_encoder=False, queue=False)
    batch_kind = CARD.batch_kind
    can_lock_image = CARD.can_lock_image
    published = CARD.published
    outside_backbone = ("image_projection.", "text.", "logit_scale")
    collapse_measure = "std"

    def __init__(self, backbone: nn.Module, feature_dim: int, embed_dim: int = 512,
                 context_length: int = 77, text_width: int = 512, text_heads: int = 8,
                 text_layers: int = 12, init_temperature: float = 0.07,
                 max_logit_scale: float = 100.0) -> None:
        super().__init__()
        from open_clip.transformer import TextTransformer

        if min(embed_dim, context_length, text_width, text_heads, text_layers) <= 0:
            raise ValueError("CLIP widths, heads, layers and context length must be positive")
        if text_width % text_heads:
            raise ValueError(f"text_width {text_width} is not divisible by text_heads "
                             f"{text_heads}")
        if not (0 < init_temperature < 1 and max_logit_scale > 1):
            raise ValueError("CLIP needs init_temperature > 0 and max_logit_scale > 1")
        self.backbone = backbone
        self.image_projection = nn.Linear(feature_dim, embed_dim, bias=False)
        nn.init.normal_(self.image_projection.weight, std=feature_dim ** -0.5)
        self.text = TextTransformer(context_length=context_length, width=text_width,
                                    heads=text_heads, layers=text_layers,
                                    output_dim=embed_dim)
        self.logit_scale = nn.Parameter(torch.tensor(logit_scale_init(init_temperature)))
        self.max_log_scale = math.log(max_logit_scale)
        self.dim = embed_dim
        self.context_length = context_length
        self.image_locked = False
        from open_clip.loss import ClipLoss

        self.loss = ClipLoss(local_loss=False, gather_with_grad=True, cache_labels=False,
                             rank=rank(), world_size=world_size())

    @classmethod
    def from_config(cls, settings: CLIPConfig, backbone: nn.Module, feature_dim: int,
                    image_size: int = 224, steps_per_epoch: int = 0) -> CLIP:
        """CLIP from ``model.clip``."""
        s = settings
        return cls(backbone, feature_dim, s.embed_dim, s.context_length, s.text_width,
                   s.text_heads, s.text_layers, s.init_temperature, s.max_logit_scale)

    @classmethod
    def check(cls, settings: CLIPConfig, run: RunShape, where: str) -> None:
        """Positive widths, heads dividing the width, temperature in (0, 1), a clamp > 1."""
        s = settings
        for key in ("embed_dim", "context_length", "text_width", "text_heads", "text_layers"):
            value = getattr(s, key)
            require(value > 0, where, f"model.clip.{key}", value, "use a positive integer")
        require(s.context_length >= 3, where, "model.clip.context_length", s.context_length,
                "use 3 or more (start, one token, end); CLIP uses 77")
        require(s.text_width % s.text_heads == 0, where, "model.clip.text_heads", s.text_heads,
                f"it must divide model.clip.text_width = {s.text_width}")
        require(0 < s.init_temperature < 1, where, "model.clip.init_temperature",
                s.init_temperature, "use a value in (0, 1); CLIP uses 0.07")
        require(s.max_logit_scale > 1, where, "model.clip.max_logit_scale", s.max_logit_scale,
                "use a value above 1; CLIP uses 100")

    def lock_image(self) -> None:
        """LiT's locked image tower: the backbone's weights stop learning and its BatchNorm
        statistics stay as loaded (the backbone is kept in eval mode); the image projection
        still learns."""
        self.backbone.requires_grad_(False)
        self.image_locked = True
        self.backbone.eval()

    def train(self, mode: bool = True) -> CLIP:
        """``nn.Module.train``, except that a locked backbone stays in eval mode."""
        super().train(mode)
        if self.image_locked:
            self.backbone.eval()
        return self

    def encode_image(self, images: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        """``(B, 3, H, W)`` float -> ``(B, embed_dim)``, l2-normalised with ``normalize``."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.image_locked):
            h = self.backbone(images)
        z = self.image_projection(h)
        return F.normalize(z, dim=-1) if normalize else z

    def encode_text(self, tokens: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        """``(B, L)`` int64 token ids -> ``(B, embed_dim)``, l2-normalised with
        ``normalize`` (the signature open_clip's zero-shot classifier builder calls)."""
        t = self.text(tokens)
        return F.normalize(t, dim=-1) if normalize else t

    def forward(self, inputs: tuple[torch.Tensor, torch.Tensor]
                ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Loss and metrics for ``inputs = (images (B, 3, H, W) float, tokens (B, L) int64)``,
        row i of each a matching pair.

        Returns:
            ``(loss, metrics)``: the float32 symmetric InfoNCE of open_clip's ``ClipLoss``
            (mean of image->text and text->image cross-entropy over the logits
            ``exp(t) * image_emb @ text_emb.T``; under data parallelism over the global
            batch, features gathered with gradient), and :func:`step_metrics` of the
            l2-normalised image embedding (``(B, embed_dim)``) and the backbone features.
        """
        images, tokens = inputs
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.image_locked):
            h = self.backbone(images)
        image_emb = F.normalize(self.image_projection(h).float(), dim=-1)
        text_emb = F.normalize(self.text(tokens).float(), dim=-1)
        loss = self.loss(image_emb, text_emb, self.logit_scale.float().exp())
        metrics = step_metrics(image_emb, h)
        metrics["logit_scale"] = self.logit_scale.detach().exp()
        return loss, metrics

    def on_step_end(self, step: int, total_steps: int) -> None:
        """Clamp the logit scale to ``[1, max_logit_scale]`` (CLIP section 2.5; open_clip
        clamps the stored log-scale to ``[0, ln 100]`` after each step)."""
        with torch.no_grad():
            self.logit_scale.clamp_(0.0, self.max_log_scale)

    def param_groups(self) -> list[dict]:
        """``decay`` (weights) and ``no_decay`` (gains, biases, norms, the logit scale;
        :func:`_no_decay`), trainable parameters only (a locked backbone has none)."""
        named = [(n, p) for n, p in self.named_parameters() if p.requires_grad]
        decay = [p for n, p in named if not _no_decay(n, p)]
        no_decay = [p for n, p in named if _no_decay(n, p)]
        return nonempty({"name": "decay", "params": decay, "fixed_lr": False,
                         "no_weight_decay": False},
                        {"name": "no_decay", "params": no_decay, "fixed_lr": False,
                         "no_weight_decay": True})

    def export_extras(self) -> dict[str, dict[str, torch.Tensor]]:
        """What the run exports beside ``backbone.safetensors``: ``text_tower`` (the image
        projection, the text tower and the logit scale, CPU tensors)."""
        return {"text_tower": {k: v.detach().cpu().contiguous()
                               for k, v in self.state_dict().items()
                               if not k.startswith("backbone.")}}
