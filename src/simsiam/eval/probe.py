"""The online linear probe: class labels learned during pretraining, for monitoring only.

An affine-free BN + Linear (:class:`~simsiam.eval.linear.LinearClassifier`) learns the
classes from the detached backbone features of the first view of every training batch,
with its own SGD (momentum 0.9, constant lr ``eval.probe_lr``). Its optimizer owns only
its own parameters and the features carry no graph, so no gradient reaches the encoder.
Labels are used only here and by the kNN monitor.
"""

from __future__ import annotations

import numpy as np
import torch

from simsiam.eval.linear import LinearClassifier, topk_accuracy


class OnlineProbe:
    """A classifier on detached features, trained one batch at a time.

    Args:
        feature_dim: c, the width of the backbone's features.
        labels: ``(N,)`` int64 class of every training image (indexed by dataset index).
        num_classes: number of classes.
        lr: its SGD lr (``eval.probe_lr``).
        device: the training device.
        distributed: BatchNorm synchronised over the processes (torchrun).

    Attributes:
        classifier: the BN + Linear module (checkpoint key ``probe``).
        optimizer: its SGD (checkpoint key ``probe_optimizer``).
    """

    def __init__(self, feature_dim: int, labels: np.ndarray, num_classes: int, lr: float,
                 device: torch.device, distributed: bool = False) -> None:
        self.classifier: torch.nn.Module = LinearClassifier(feature_dim, num_classes).to(device)
        if distributed:
            from simsiam.distributed import convert_sync_batchnorm

            self.classifier = convert_sync_batchnorm(self.classifier, device.type)
        self.optimizer = torch.optim.SGD(self.classifier.parameters(), lr=lr, momentum=0.9)
        self.labels = torch.as_tensor(labels, device=device)
        self._train_module = self.classifier

    def wrap(self, ctx) -> None:
        """Under torchrun, average the probe's gradients over the processes (call after a
        checkpoint is loaded: DDP copies rank 0's weights to every process)."""
        if ctx.distributed:
            from simsiam.distributed.ddp import wrap_ddp

            self._train_module = wrap_ddp(self.classifier, ctx)

    def update(self, features: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """One SGD step on ``features`` ``(B, c)`` (detached) of the images ``index``
        ``(B,)``; returns the number of correct predictions, a 0-dim tensor (no sync)."""
        y = self.labels[index.to(self.labels.device)]
        logits = self._train_module(features.float())
        loss = torch.nn.functional.cross_entropy(logits, y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return (logits.argmax(1) == y).sum()

    @torch.no_grad()
    def top1(self, features: torch.Tensor, labels: torch.Tensor) -> float:
        """Top-1 (percent) on held-out ``features`` ``(N, c)`` with ``labels`` ``(N,)``, in
        eval mode (returned to train mode)."""
        self.classifier.eval()
        acc = topk_accuracy(self.classifier(features), labels, 1)
        self.classifier.train()
        return acc
