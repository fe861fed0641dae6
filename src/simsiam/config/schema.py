"""The config schema: one typed dataclass per section of a run's YAML file.

OmegaConf reads a YAML preset through these structured configs, so an unknown key or a
value of the wrong type is rejected before any work starts (:mod:`simsiam.config.load`);
:mod:`simsiam.config.validate` then checks ranges and choices. Defaults follow the
paper's ImageNet recipe (SIMSIAM.md section 3); ``configs/cifar10.yaml`` holds the CIFAR
recipe of Appendix D. Each method's section (``model.simsiam``, ``model.swav``, ...) is
the ``Settings`` dataclass defined beside the method in :mod:`simsiam.methods`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from simsiam.methods.byol import BYOLConfig
from simsiam.methods.clip import CLIPConfig
from simsiam.methods.mocov2 import MoCoV2Config
from simsiam.methods.simclr import SimCLRConfig
from simsiam.methods.simsiam import SimSiamConfig
from simsiam.methods.swav import SwAVConfig


@dataclass
class DataConfig:
    """Where images come from and how many are used.

    ``source`` is an ImageFolder-style directory (class subfolders; with ``train/`` and
    ``test/`` or ``val/`` inside, those are the splits), ``cifar10`` / ``cifar100``
    (torchvision's download, stored under the cache directory), or images with captions:
    a CSV/TSV/JSONL caption table or WebDataset shards (:mod:`simsiam.data.captions`).
    """

    source: str = ""
    image_size: int = 224  # side of each augmented view, pixels
    per_class: int | None = None  # at most this many training images per class
    test_per_class: int | None = None  # at most this many held-out images per class
    holdout_fraction: float = 0.1  # held out for the kNN monitor when there is no test split
    cache_dir: str | None = None  # default: $SIMSIAM_CACHE_DIR or ~/.cache/simsiam
    cache_side: int | None = None  # decoded side for folders of mixed sizes; default 8/7 x size
    num_workers: int = 2  # DataLoader worker processes for augmentation
    strict: bool = False  # undecodable image files: False skips them with a warning, True stops
    resident_max_mb: int = 4096  # batched path: hold the decoded images on the device up to this
    # Pretraining input (simsiam.data.stream): "cache" decodes every image once to a square
    # (whole images when all are one square size, else centre squares of cache_side);
    # "stream" decodes each file every epoch in the workers, crops from the whole image;
    # "dali": as stream, decoded and cut by NVIDIA DALI on the GPU (pip extra [dali]; the
    # stream path runs instead, with a notice, without DALI or a GPU);
    # "auto": cache when every image is one square no larger than cache_side, else stream.
    pipeline: str = "auto"
    jpeg_draft: bool = True  # stream: decode a JPEG at 1/2, 1/4, 1/8 size when every crop allows
    # Streamed WebDataset shards: "offset" reads each sample by its byte offset in the
    # sampler's shuffled order (as a folder); "sequential": each worker of each process
    # reads a contiguous run of samples shard after shard through a shuffle buffer of
    # shuffle_buffer samples (simsiam.data.shard_stream: for shared file systems)
    shard_order: str = "offset"
    shuffle_buffer: int = 1000
    # "auto": class subfolder names are labels (for the kNN monitor and probes only; one
    # class, e.g. a flat folder, is unlabelled); "none": ignore them (label-free signals only)
    labels: str = "auto"
    # Caption tables (CSV/TSV/JSONL, CLIP; simsiam.data.captions): the folder the image
    # column's paths are relative to (default: the table's folder, else its images/), and
    # the two columns (default: the first of image/filepath/file/path/image_path, and of
    # caption/text/title/sentence).
    image_root: str | None = None
    image_column: str | None = None
    caption_column: str | None = None


@dataclass
class AugmentConfig:
    """The view recipe. Null values are the recipe's (:mod:`simsiam.augment.recipes`):
    ``recipe`` ``auto`` is the run's method's own, as its authors ran it (SimSiam / MoCo v2:
    SIMSIAM.md section 3; SimCLR, BYOL, SwAV, CLIP: their code), resolved when the config
    is loaded; a value given here (or with ``--set``) replaces the recipe's."""

    recipe: str = "auto"  # auto (the method's own) | simsiam | mocov2 | simclr | byol | swav | clip
    crop_scale: list[float] | None = None  # crop area fraction; SimSiam 0.2-1, SimCLR 0.08-1
    crop_ratio: list[float] = field(default_factory=lambda: [3.0 / 4.0, 4.0 / 3.0])
    jitter_prob: float | None = None
    brightness: float | None = None
    contrast: float | None = None
    saturation: float | None = None
    hue: float | None = None
    grayscale_prob: float | None = None
    # Gaussian blur and solarize: view 1's (and any view after the second), then view 2's;
    # a view-1 value given without its view2_ key sets both views.
    blur_prob: float | None = None
    view2_blur_prob: float | None = None
    solarize_prob: float | None = None
    view2_solarize_prob: float | None = None
    blur_sigma: list[float] = field(default_factory=lambda: [0.1, 2.0])
    flip_prob: float | None = None
    normalize: str = "auto"  # auto: CIFAR-10 statistics for views <= 32 px, else ImageNet
    # "batched": whole batches on the training device (simsiam.augment.batched, the fast
    # path); "per_image": torchvision's kernels one image at a time in DataLoader workers.
    backend: str = "batched"
    # batched: compiled view kernels (torch.compile, a one-off cost kept in the compile
    # cache): on the CPU the whole post-crop recipe over cache-sized chunks, on CUDA each
    # colour-jitter operation. null (auto): on for CPU views of 128 px and more.
    compile: bool | None = None
    # Multi-crop (SwAV, SIMSIAM.md section 6): extra small views per image, batched only.
    small_crops: int = 0  # SwAV on ImageNet: 6 (with 2 large crops of crop_scale [0.14, 1])
    small_size: int | None = None  # side of the small crops; None: image_size x 96/224
    small_crop_scale: list[float] = field(default_factory=lambda: [0.05, 0.14])


@dataclass
class ModelConfig:
    """The backbone (shared by every method) and each method's own section.

    Only the section of the run's ``method`` is used and checked; a run's ``config.yaml``
    holds them all (so that it loads back to an equal config). Source: SIMSIAM.md sections 2 and 6.
    """

    backbone: str = "resnet50"
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
class OptimConfig:
    """The optimizer and its schedule: SGD with a cosine decay (SIMSIAM.md section 3); LARS
    (timm's, as SimCLR's, BYOL's and SwAV's) and AdamW (CLIP) for the other methods."""

    optimizer: str = "sgd"  # a key of simsiam.train.optim.OPTIMIZERS (sgd, lars, adamw)
    # On a --method switch, take that method's published optimizer settings (LARS for
    # SimCLR, BYOL, SwAV; MoCo v2's lr). False: this file's optimizer holds for every method
    # (the cpu presets: one optimizer for a short, equal-budget comparison).
    method_optimizer: bool = True
    base_lr: float = 0.05  # lr = base_lr x batch_size / 256
    momentum: float = 0.9
    weight_decay: float = 1e-4
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


@dataclass
class TrainConfig:
    """The run: length, batch, device, output and logging."""

    epochs: int = 100
    batch_size: int = 512
    seed: int = 0
    device: str = "auto"
    out: str = "runs/simsiam"
    log_every: int = 10  # steps between metric records
    save_every: int = 0  # also keep checkpoints/epoch_NNNN.pt every N epochs; 0 = only last.pt
    channels_last: bool = False
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
    knn_k: int = 200
    knn_t: float = 0.1
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

    method: str = "simsiam"
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
