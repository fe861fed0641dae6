"""MoCo v2: a query encoder, a momentum key encoder, a queue of negatives, InfoNCE.

Source: SIMSIAM.md section 6 (MoCo v2 row); He et al. 2020 ("Momentum Contrast", section
3.2 and Algorithm 1) and Chen et al. 2020 ("Improved Baselines with Momentum Contrastive
Learning": the 2-layer MLP head, T = 0.2). m = 0.999 and a 65,536-key queue on ImageNet;
m = 0.99 and 4,096 keys on CIFAR.

Order within a training step, as in MoCo's Algorithm 1: the keys of x2 are computed by
the key encoder under no_grad, the loss of the queries of x1 against [k, queue] is
back-propagated into the query encoder only, then (``on_step_end``, after the optimizer
step) the key encoder takes its momentum update and the keys are enqueued. The key
encoder starts as an exact copy of the query encoder.

Shuffle BN (MoCo section 3.3: BN statistics computed on subsets of the batch, the keys'
subsets different from the queries', so that a query cannot find its key through the
batch statistics): on one device as the authors' CIFAR-10 demo emulates it
(``colab/moco_cifar10_demo.ipynb``, "without which loses 4% at 800 epochs"): every
BatchNorm2d of both encoders is a :class:`~simsiam.models.splitbn.SplitBatchNorm2d` with
``bn_splits`` groups (8), and the key batch is shuffled before the key encoder and
unshuffled after. Under data parallelism (torchrun) every BatchNorm is synchronised over
the global batch instead (as MoCo v3 and SimSiam train; the split layers become
SyncBatchNorm): the authors' cross-process shuffle needs per-process BN, which our
data-parallel set-up replaces; with SyncBN the statistics of a batch of B images change
by 1/B for any one sample, the leak shuffle BN closes at small per-GPU batches. Every
process enqueues the keys of the whole global batch, so the queues stay identical.
"""

from __future__ import annotations

import torch
from torch import nn

from simsiam.distributed.ops import gather_no_grad, world_size
from simsiam.errors import require
from simsiam.methods.base import Method, RunShape, Traits, param_group, step_metrics
from simsiam.methods.card import small_images
from simsiam.methods.contrastive import check_two_views, info_nce
from simsiam.methods.momentum import Queue, ema_update, momentum_copy
from simsiam.methods.settings.mocov2 import CARD, MoCoV2Config
from simsiam.models.heads import MLPHead
from simsiam.models.splitbn import shuffle_batch, split_batchnorm


def resolved_queue_size(settings: MoCoV2Config, image_size: int) -> int:
    """MoCo v2's queue length: ``settings.queue_size``, else 4,096 on CIFAR-size views and
    65,536 on ImageNet-size ones (SIMSIAM.md section 6)."""
    if settings.queue_size is not None:
        return settings.queue_size
    return 4096 if small_images(image_size) else 65536


class MoCoV2(Method):
    """The MoCo v2 model.

    Args:
        backbone: images ``(B, 3, H, W)`` -> features ``(B, feature_dim)`` (query side; the
            key side is a deep copy).
        feature_dim: c, the backbone's output width.
        dim: output width of the head (128).
        hidden_dim: head hidden width (None: c, as MoCo's ``dim_mlp``).
        queue_size: L, number of negatives (4096 on CIFAR, 65536 on ImageNet); must be a
            multiple of the batch size (checked at the first enqueue).
        momentum: m of the key encoder's EMA (0.99 on CIFAR, 0.999 on ImageNet).
        temperature: InfoNCE temperature (0.2).
        bn_splits: shuffle BN on one device: every BatchNorm2d of the backbone becomes a
            :class:`SplitBatchNorm2d` of this many groups and the keys' batch is shuffled
            (see the module docstring); 1 switches it off.

    The head is MoCo v2's (facebookresearch/moco ``builder.py``): Linear(c, hidden)
    ReLU Linear(hidden, dim), with biases, no BN (:class:`MLPHead`).

    Attributes:
        backbone, head: the query encoder (trained).
        key_backbone, key_head: the key encoder (``requires_grad=False``, EMA only).
        queue: :class:`Queue` of l2-normalised keys ``(L, dim)``.

    Raises:
        ValueError: temperature <= 0, momentum outside [0, 1], or a non-positive size.
    """

    card = CARD
    name = CARD.name
    Settings = MoCoV2Config
    traits = Traits(negatives=True, momentum_encoder=True, queue=True)
    outside_backbone = ("head.", "key_backbone.", "key_head.", "queue.")


    def __init__(self, backbone: nn.Module, feature_dim: int, dim: int = 128,
                 hidden_dim: int | None = None, queue_size: int = 65536,
                 momentum: float = 0.999, temperature: float = 0.2, bn_splits: int = 1) -> None:
        super().__init__()
        if temperature <= 0 or not 0.0 <= momentum <= 1.0 or bn_splits < 1:
            raise ValueError(f"MoCoV2 needs a temperature > 0, a momentum in [0, 1] and "
                             f"bn_splits >= 1, got temperature={temperature} "
                             f"momentum={momentum} bn_splits={bn_splits}")
        self.bn_splits = bn_splits
        self.backbone = split_batchnorm(backbone, bn_splits) if bn_splits > 1 else backbone
        self.head = MLPHead([feature_dim, hidden_dim or feature_dim, dim], hidden_bn=False)
        self.key_backbone = momentum_copy(self.backbone)
        self.key_head = momentum_copy(self.head)
        self.queue = Queue(queue_size, dim)
        self.dim = dim
        self.momentum = momentum
        self.temperature = temperature
        self._pending_keys: torch.Tensor | None = None

    @classmethod
    def from_config(cls, settings: MoCoV2Config, backbone: nn.Module, feature_dim: int,
                    image_size: int = 224, steps_per_epoch: int = 0) -> MoCoV2:
        """MoCo v2 from ``model.mocov2``; null momentum and queue take the published values
        for the view size (0.99 and 4,096 up to 64 px, else 0.999 and 65,536)."""
        m = settings.momentum
        if m is None:
            m = 0.99 if small_images(image_size) else 0.999
        return cls(backbone, feature_dim, dim=settings.dim, hidden_dim=settings.hidden_dim,
                   queue_size=resolved_queue_size(settings, image_size), momentum=m,
                   temperature=settings.temperature,
                   bn_splits=settings.bn_splits if settings.shuffle_bn else 1)

    @classmethod
    def check(cls, settings: MoCoV2Config, run: RunShape, where: str) -> None:
        """Widths, temperature, momentum, and a queue that is a multiple of the batch."""
        s, k = settings, "model.mocov2."
        require(s.dim > 0, where, k + "dim", s.dim, "use a positive width")
        require(s.hidden_dim is None or s.hidden_dim > 0, where, k + "hidden_dim", s.hidden_dim,
                "use a positive width or null (the backbone's width)")
        require(s.bn_splits >= 1, where, k + "bn_splits", s.bn_splits,
                "use 1 or more groups (8 in MoCo's CIFAR demo)")
        require(not s.shuffle_bn or run.batch_size % s.bn_splits == 0, where,
                k + "bn_splits", s.bn_splits,
                f"shuffle BN splits the batch ({run.batch_size}) into equal groups: use a "
                f"number of splits that divides it, or model.mocov2.shuffle_bn=false")
        require(s.temperature > 0, where, k + "temperature", s.temperature,
                "use a positive temperature such as 0.2")
        require(s.momentum is None or 0 <= s.momentum <= 1, where, k + "momentum", s.momentum,
                "use a value in [0, 1] or null")
        require(s.queue_size is None or s.queue_size >= 1, where, k + "queue_size",
                s.queue_size, "use a positive integer or null")
        q = resolved_queue_size(s, run.image_size)
        require(q % run.batch_size == 0, where, k + "queue_size", q,
                f"the MoCo queue must be a multiple of train.batch_size ({run.batch_size}): "
                f"use e.g. {max(1, q // run.batch_size) * run.batch_size}")

    @torch.no_grad()
    def keys(self, x: torch.Tensor) -> torch.Tensor:
        """Keys of ``x``: the key encoder's l2-normalised output ``(B, dim)``, no graph, in
        the order of ``x``. With shuffle BN (training, one process) the key encoder sees
        ``x`` shuffled, so its BN groups hold other images than the queries'."""
        shuffle = self.bn_splits > 1 and self.training and world_size() == 1
        if shuffle:
            perm, inverse = shuffle_batch(x.shape[0], x.device)
            x = x[perm]
        k = self.key_head(self.key_backbone(x))
        if shuffle:
            k = k[inverse]
        return nn.functional.normalize(k.float(), dim=1)

    def forward(self, views: list[torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Loss and metrics for ``views = [x1, x2]`` (queries from x1, keys from x2).

        The keys are kept and enqueued by :meth:`on_step_end` (after the optimizer step),
        so the queue read by this loss holds only keys of earlier batches.

        Returns:
            ``(loss, metrics)``: the float32 InfoNCE scalar and detached ``collapse_std``
            (0-dim, of the query head output q), ``embedding`` (that z, ``(B, d)``) and
            ``features`` (``(B, c)``, query backbone output of x1).

        Raises:
            ValueError: not exactly two views.
        """
        check_two_views("MoCo v2", views)
        if self.training:
            self.queue.check_batch(views[0].shape[0] * world_size())  # the global batch
        h1 = self.backbone(views[0])
        q = self.head(h1)
        k = self.keys(views[1])
        loss = info_nce(q, k, self.queue.keys, self.temperature)
        if self.training:
            self._pending_keys = k
        return loss, step_metrics(q, h1)

    def param_groups(self) -> list[dict]:
        """One group, ``encoder`` (query backbone + head); the key encoder is not trained."""
        return [param_group("encoder", (self.backbone, self.head))]

    @torch.no_grad()
    def on_step_end(self, step: int, total_steps: int) -> None:
        """Momentum update of the key encoder, then enqueue the last training batch's keys."""
        ema_update(self.key_backbone, self.backbone, self.momentum)
        ema_update(self.key_head, self.head, self.momentum)
        if self._pending_keys is not None:  # every process enqueues the global batch's keys
            self.queue.enqueue(gather_no_grad(self._pending_keys))
            self._pending_keys = None
