"""The config schema: one typed dataclass per section of a run's YAML file.

OmegaConf reads a YAML preset through these structured configs, so an unknown key or a
value of the wrong type is rejected before any work starts (:mod:`simsiam.config.load`);
:mod:`simsiam.config.validate` then checks ranges and choices. Defaults follow the
paper's ImageNet recipe (SIMSIAM.md section 3); ``configs/cifar10.yaml`` holds the CIFAR
recipe of Appendix D.

Each layer owns its section and this module assembles them (torch-free, as every module it
imports): ``data`` is :mod:`simsiam.data.config`, ``augment`` :mod:`simsiam.augment.config`,
``optim`` :mod:`simsiam.optim.config`, each method's ``model.<name>`` its ``Settings`` in
:mod:`simsiam.methods.settings`; ``model`` (the backbone), ``train`` and ``eval`` are the
run's own, here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from simsiam.augment.config import AugmentConfig
from simsiam.data.config import DataConfig
from simsiam.methods.settings import (
    BYOLConfig,
    CLIPConfig,
    MoCoV2Config,
    SimCLRConfig,
    SimSiamConfig,
    SwAVConfig,
)
from simsiam.optim.config import OptimConfig

__all__ = ["AugmentConfig", "Config", "DataConfig", "EvalConfig", "ModelConfig", "OptimConfig",
           "TrainConfig"]


@dataclass
class ModelConfig:
    """The backbone (shared by every method) and each method's own section.

    Only the section of the run's ``method`` is used and checked; a run's ``config.yaml``
    holds them all (so that it loads back to an equal config). Source: SIMSIAM.md sections 2 and 6.
    """

    backbone: str = "resnet50"  # a torchvision ResNet (resnet18, resnet50, ...) or timm/<name>
    stem: str = "imagenet"  # "cifar": 3x3 stride-1 first conv, no max-pool
    # Official SimSiam: each residual branch's last BN starts at 0. False is torchvision's
    # (and lightly's) default, which learns faster in runs of a few hundred steps.
    zero_init_residual: bool = True
    # Start the backbone (CLIP's image tower) from an exported backbone.safetensors or a
    # run directory (LiT, Zhai et al. 2022); its arch and stem replace model.backbone/stem.
    image_init: str | None = None
    lock_image: bool = False  # LiT's "locked image tower": frozen weights and BN statistics
    simsiam: SimSiamConfig = field(default_factory=SimSiamConfig)
    simclr: SimCLRConfig = field(default_factory=SimCLRConfig)
    mocov2: MoCoV2Config = field(default_factory=MoCoV2Config)
    byol: BYOLConfig = field(default_factory=BYOLConfig)
    swav: SwAVConfig = field(default_factory=SwAVConfig)
    clip: CLIPConfig = field(default_factory=CLIPConfig)


@dataclass
class TrainConfig:
    """The run: length, batch, device, output and logging."""

    epochs: int = 100  # length of the run; the lr schedule spans it
    batch_size: int = 512  # the global batch: all processes together under torchrun
    seed: int = 0  # seeds the weights, the views, the held-out draw and the order
    device: str = "auto"  # auto (CUDA when there is one) | cpu | cuda
    out: str = "runs/simsiam"  # the run directory (docs/training.md)
    log_every: int = 10  # steps between metric records
    save_every: int = 0  # also keep checkpoints/epoch_NNNN.pt every N epochs; 0 = only last.pt
    channels_last: bool = False  # NHWC memory format for the convolutions
    compile: bool = False  # torch.compile the method (model + loss) for the training step
    # bfloat16 autocast (the loss stays float32): "auto" = on CUDA, and on CPUs with native
    # bf16 (AVX512-BF16 or AMX); "bf16" = always; "fp32" = float32 everywhere.
    amp: str = "auto"


@dataclass
class EvalConfig:
    """The monitor (kNN with labels, label-free signals always; SIMSIAM.md section 4 and
    :mod:`simsiam.eval.monitor`), the online probe and the collapse guard
    (:mod:`simsiam.eval.collapse`)."""

    knn_every: int = 1  # epochs between kNN evaluations; 0 switches the monitor off
    knn_k: int = 200  # neighbours that vote in the kNN monitor
    knn_t: float = 0.1  # temperature of the kNN monitor's weighted vote
    # also evaluate the randomly initialised encoder (epoch 0: the baseline of every figure)
    knn_at_start: bool = True
    # held-out images whose two fixed views measure copy retrieval and alignment; 0: off
    label_free_images: int = 512
    batch_size: int = 512  # feature-extraction batch
    online_probe: bool = True  # BN + Linear on detached backbone features, own SGD
    probe_lr: float = 0.1  # the online probe's lr (SGD, momentum 0.9, constant)
    # The guard decides on "std" (the paper's metric) or "rank" (RankMe's effective rank of
    # z); "auto": the method's choice, rank when z leaves an affine-free BN (SimSiam's).
    collapse_measure: str = "auto"
    collapse_ratio: float = 0.3  # std guard threshold, as a fraction of 1/sqrt(d)
    rank_ratio: float = 0.1  # rank guard threshold, as a fraction of an isotropic batch's
    # Rows of the batch's z the effective rank uses: a fixed count, so that the rank guard's
    # threshold means the same at any batch of at least that size (it was chosen at 128).
    rank_rows: int = 128
    feature_rank_rows: int = 1024  # held-out backbone features ranked at each kNN evaluation
    collapse_patience: int = 100  # steps under the threshold before the guard fires
    stop_on_collapse: bool = False  # stop the run (last checkpoint kept) when it fires


@dataclass
class Config:
    """A whole run."""

    method: str = "simsiam"  # simsiam | simclr | mocov2 | byol | swav | clip
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
