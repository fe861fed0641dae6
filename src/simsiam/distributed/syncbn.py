"""Synchronised BatchNorm: batch statistics over the global batch of every process.

Source: SIMSIAM.md section 3 (the official recipe trains with SyncBatchNorm on 8 GPUs;
a reproduction without it lost 3 points). On GPU this is :class:`torch.nn.SyncBatchNorm`
unchanged. PyTorch's version refuses CPU tensors, so on CPU (gloo) the training-mode
forward pass here computes the same statistics with two differentiable all-reduces
(the mean, then the centred sum of squares), and autograd sums their gradients over the
processes, which is what SyncBatchNorm's backward does. The result equals BatchNorm on
the concatenated global batch.
"""

from __future__ import annotations

import torch
from torch import nn

from simsiam.distributed.ops import all_reduce_sum
from simsiam.models.splitbn import adopt_batchnorm_state


class SyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm over the global batch of a data-parallel run, for CPU processes (gloo).

    PyTorch's :class:`torch.nn.SyncBatchNorm` (used on GPU, see
    :func:`convert_sync_batchnorm`) refuses CPU tensors, and DistributedDataParallel
    refuses it in CPU modules, hence this separate class with the same state and the same
    result. Input ``(N, C)`` or ``(N, C, *)``, any float dtype; statistics in float32; the
    output has the input's dtype. In eval mode, or with no process group of more than one
    process, it is plain BatchNorm. Running statistics get the global mean and the unbiased
    global variance, as in PyTorch (momentum ``None`` gives the cumulative average).
    """

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, input: torch.Tensor) -> torch.Tensor:  # noqa: D102
        if not (self.training and torch.distributed.is_available()
                and torch.distributed.is_initialized()
                and torch.distributed.get_world_size() > 1):
            return super().forward(input)
        self._check_input_dim(input)
        c = input.shape[1]
        dims = [0, *range(2, input.dim())]
        shape = [1, c] + [1] * (input.dim() - 2)
        x = input.float()
        local_count = x.numel() // c
        totals = all_reduce_sum(torch.cat([x.sum(dims), x.new_tensor([local_count])]),
                                grad=True)
        count = totals[-1]
        mean = totals[:c] / count
        centred = x - mean.view(shape)
        var = all_reduce_sum((centred * centred).sum(dims), grad=True) / count
        y = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.float().view(shape) + self.bias.float().view(shape)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = (1.0 / float(self.num_batches_tracked) if self.momentum is None
                     else self.momentum)
                n = float(count)
                self.running_mean.mul_(1 - m).add_(mean.detach() * m)
                self.running_var.mul_(1 - m).add_(var.detach() * (n / max(n - 1, 1.0)) * m)
        return y.to(input.dtype)


def convert_sync_batchnorm(module: nn.Module, device_type: str = "cpu") -> nn.Module:
    """Replace every ``BatchNorm1d/2d/3d`` in ``module`` with a synchronised one, keeping
    its parameters (the same objects), running statistics and settings.

    Args:
        module: any module; returned converted (the same object unless it is itself a
            BatchNorm).
        device_type: where it will run: ``cuda`` gives :class:`torch.nn.SyncBatchNorm`
            (PyTorch's fused kernels), anything else this module's :class:`SyncBatchNorm`.

    State-dict keys do not change, so checkpoints move freely between 1 and N processes.
    """
    if device_type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(
            module, (nn.SyncBatchNorm, SyncBatchNorm)):
        out = SyncBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                            module.track_running_stats)
        return adopt_batchnorm_state(out, module)
    for name, child in module.named_children():
        module.add_module(name, convert_sync_batchnorm(child, device_type))
    return module
