"""``optim.*``: the config section of the optimizer and its schedule, owned by this package
(torch-free, so that the config schema loads without torch; assembled in
:mod:`simsiam.config.schema`)."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["OptimConfig"]


@dataclass
class OptimConfig:
    """The optimizer and its schedule: SGD with a cosine decay (SIMSIAM.md section 3); LARS
    (timm's, as SimCLR's, BYOL's and SwAV's) and AdamW (CLIP) for the other methods."""

    optimizer: str = "sgd"  # a key of simsiam.optim.OPTIMIZERS (sgd, lars, adamw)
    # On a --method switch, take that method's published optimizer settings (LARS for
    # SimCLR, BYOL, SwAV; MoCo v2's lr). False: this file's optimizer holds for every method
    # (the cpu presets: one optimizer for a short, equal-budget comparison).
    method_optimizer: bool = True
    base_lr: float = 0.05  # lr = base_lr x batch_size / 256
    momentum: float = 0.9  # SGD / LARS momentum
    weight_decay: float = 1e-4  # L2 weight decay (excluded groups: the method says which)
    # AdamW only (CLIP: Radford et al. 2021 and open_clip's defaults for ViT-B/RN models)
    betas: list[float] = field(default_factory=lambda: [0.9, 0.98])
    eps: float = 1e-6
    # "linear": lr = base_lr x batch / 256 (SIMSIAM.md section 3); "none": lr = base_lr
    # (CLIP and open_clip give the lr itself)
    lr_scaling: str = "linear"
    # Linear warmup before the cosine decay. None: the paper's rule (Table 2), 10 epochs
    # when the batch is 1024 or more, else none; resolved when the config is loaded, and
    # shortened to half the run when --epochs leaves no room for it (with a notice).
    warmup_epochs: float | None = None
    schedule: str = "epoch"  # cosine evaluated per "epoch" (official code) or per "step"
