"""Split-batch BatchNorm: each of k groups of a batch normalised with its own statistics.

Source: MoCo (He et al. 2020) section 3.3, "Shuffling BN": with BN statistics computed
over the whole batch, a query can find its key (the same image) through the statistics
the two batches share; MoCo computes BN on each GPU's subset and gives the key encoder a
shuffled batch, so a query's and its key's subsets differ. On one device the authors'
CIFAR-10 demo (facebookresearch/moco ``colab/moco_cifar10_demo.ipynb``) emulates the
GPUs with a BatchNorm that splits the batch into ``num_splits`` groups; written here
from that description, not from the notebook.

Group ``j`` of a batch of ``n`` samples is samples ``j, j + k, j + 2k, ...`` (``k`` =
``num_splits``). In training each group is normalised with its own mean and biased
variance, and the running statistics take the mean over the groups of what each
group's BatchNorm would store (its mean and unbiased variance). In eval mode it is plain
BatchNorm with the running statistics. The parameters and buffers are BatchNorm2d's, so
state dicts load either way and SyncBatchNorm conversion replaces it like any BatchNorm.
"""

from __future__ import annotations

import torch
from torch import nn


class SplitBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d over ``num_splits`` interleaved groups of the batch (see the module
    docstring). Input ``(N, C, H, W)`` any float dtype and memory format, N a multiple of
    ``num_splits`` in training; statistics in float32; output in the input's dtype.

    Raises:
        ValueError: ``num_splits`` < 1, or (training) N not a multiple of ``num_splits``.
    """

    def __init__(self, num_features: int, num_splits: int = 8, **kwargs) -> None:
        super().__init__(num_features, **kwargs)
        if num_splits < 1:
            raise ValueError(f"SplitBatchNorm2d needs num_splits >= 1, got {num_splits}")
        self.num_splits = num_splits

    def forward(self, input: torch.Tensor) -> torch.Tensor:  # noqa: D102
        k = self.num_splits
        if not self.training or k == 1:
            return super().forward(input)
        n, c, h, w = input.shape
        if n % k:
            raise ValueError(f"SplitBatchNorm2d: a batch of {n} cannot be split into "
                             f"{k} equal groups: use a per-device batch that is a multiple "
                             f"of {k} (or set the number of splits, model.mocov2.bn_splits)")
        x = input.float().unflatten(0, (n // k, k))  # (n/k, k, C, H, W): group j at [:, j]
        var, mean = torch.var_mean(x, dim=(0, 3, 4), unbiased=False, keepdim=True)
        y = (x - mean) * torch.rsqrt(var + self.eps)
        if self.affine:
            y = y * self.weight.view(1, 1, c, 1, 1) + self.bias.view(1, 1, c, 1, 1)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = (1.0 / float(self.num_batches_tracked) if self.momentum is None
                     else self.momentum)
                count = (n // k) * h * w
                unbiased = var * (count / max(count - 1, 1))
                self.running_mean.mul_(1 - m).add_(mean.view(k, c).mean(0) * m)
                self.running_var.mul_(1 - m).add_(unbiased.view(k, c).mean(0) * m)
        return y.flatten(0, 1).to(input.dtype)


def adopt_batchnorm_state(new: nn.Module, old: nn.Module) -> nn.Module:
    """Give the BatchNorm ``new`` the parameters (the same objects), running statistics,
    batch counter and mode of the BatchNorm ``old`` it replaces; returns ``new``."""
    if old.affine:
        new.weight, new.bias = old.weight, old.bias
    new.running_mean, new.running_var = old.running_mean, old.running_var
    new.num_batches_tracked = old.num_batches_tracked
    new.training = old.training
    return new


def split_batchnorm(module: nn.Module, num_splits: int) -> nn.Module:
    """Replace every ``BatchNorm2d`` in ``module`` with a :class:`SplitBatchNorm2d` of
    ``num_splits`` groups, keeping its parameters (the same objects), running statistics
    and settings; returns ``module`` (the new layer if ``module`` is itself one)."""
    if type(module) is nn.BatchNorm2d:
        out = SplitBatchNorm2d(module.num_features, num_splits, eps=module.eps,
                               momentum=module.momentum, affine=module.affine,
                               track_running_stats=module.track_running_stats)
        return adopt_batchnorm_state(out, module)
    for name, child in module.named_children():
        module.add_module(name, split_batchnorm(child, num_splits))
    return module


def shuffle_batch(n: int, device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
    """A random permutation of ``range(n)`` and its inverse (int64 ``(n,)`` each), drawn
    from the global generator of ``device`` (saved in checkpoints: resume draws the same):
    ``x[perm][inverse] == x``."""
    perm = torch.randperm(n, device=device)
    return perm, torch.argsort(perm)
