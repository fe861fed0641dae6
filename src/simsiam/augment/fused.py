"""The CPU's fast path for everything after the crop: compiled kernels over small chunks.

On a CPU, :meth:`BatchedViewAugment.finish` in eager mode makes about forty passes over
the whole batch (hue alone is twenty), and a batch of 224 px views (64 x 600 KB) does not
fit in any cache, so each pass waits on memory. Here the same operations, with the same
per-sample parameters and the same formulas (:mod:`simsiam.augment.kernels`), run as
three ``torch.compile`` graphs on chunks of a few samples that stay in the core's cache:

1. uint8 (or float) -> float in [0, 1], the four colour-jitter rounds, grayscale: each
   round computes all four operations per pixel in registers and keeps the sample's own
   (``code``: 0 brightness, 1 contrast, 2 saturation, 3 hue, 4 none), which is cheaper
   than four passes once fused;
2. the Gaussian blur of each blurred sample (separable, reflect padding, the sample's own
   kernel of side ``2 * ceil(3 sigma) + 1``; torchvision's ``gaussian_blur``);
3. solarize and normalisation; the flip as the chunk is copied out.

Same values as the eager kernels to float32 rounding (``tests/test_fused.py``: within
2e-5 after normalisation). Compiling takes about 30-60 s once per view side; PyTorch's
cache (:mod:`simsiam.compile_cache`) keeps the result for the next run. If compiling
fails (no C++ compiler, for example), :class:`ChunkedFinish` says so once and the eager
kernels run instead.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

import torch

from simsiam.augment.kernels import GRAY_WEIGHTS, blur_kernels
from simsiam.augment.views import SOLARIZE_THRESHOLD
from simsiam.errors import ConfigNotice, DataWarning

if TYPE_CHECKING:
    from simsiam.augment.batched import BatchViewParams

CHUNK_BYTES = 1 << 20  # float32 bytes of views per chunk: well inside a core's L2 cache
NO_JITTER = 4  # the jitter code of a round that leaves the sample unchanged


def _mod6(a: torch.Tensor) -> torch.Tensor:
    return a - 6.0 * torch.floor(a * (1.0 / 6.0))


def _hue(r: torch.Tensor, g: torch.Tensor, b: torch.Tensor, shift: torch.Tensor
         ) -> list[torch.Tensor]:
    """:func:`~simsiam.augment.kernels.adjust_hue` on channel planes; ``shift`` in turns."""
    v = torch.maximum(torch.maximum(r, g), b)
    chroma = v - torch.minimum(torch.minimum(r, g), b)
    inv = 1.0 / torch.where(chroma == 0, 1.0, chroma)
    h6 = torch.where(v == r, (g - b) * inv,
                     torch.where(v == g, 2.0 + (b - r) * inv, 4.0 + (r - g) * inv))
    h6 = _mod6(torch.where(chroma == 0, 0.0, h6) + 6.0 * shift)
    out = []
    for n in (5.0, 3.0, 1.0):
        k = _mod6(n + h6)
        out.append(v - chroma * torch.clamp(torch.minimum(k, 4.0 - k), 0.0, 1.0))
    return out


def jitter_gray(x: torch.Tensor, code: torch.Tensor, factor: torch.Tensor,
                gray: torch.Tensor) -> torch.Tensor:
    """Stage 1: ``x`` ``(C, 3, S, S)`` uint8 (or float in [0, 1]) -> jittered, grayscaled
    float32. ``code`` int64 ``(C, 4)``: the operation of each round (``NO_JITTER``: none);
    ``factor`` float32 ``(C, 4)``: its factor (hue: the shift in turns); ``gray`` bool
    ``(C,)``."""
    x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
    w0, w1, w2 = GRAY_WEIGHTS
    for rnd in range(4):
        r, g, b = x[:, 0], x[:, 1], x[:, 2]
        luma = w0 * r + w1 * g + w2 * b
        mean = luma.mean(dim=(1, 2), keepdim=True)
        f = factor[:, rnd].view(-1, 1, 1)
        c = code[:, rnd].view(-1, 1, 1)
        hue = _hue(r, g, b, f)
        planes = []
        for i, ch in enumerate((r, g, b)):
            h = hue[i]
            planes.append(torch.where(c == 0, (ch * f).clamp(0.0, 1.0),
                          torch.where(c == 1, (f * ch + (1.0 - f) * mean).clamp(0.0, 1.0),
                          torch.where(c == 2, (f * ch + (1.0 - f) * luma).clamp(0.0, 1.0),
                          torch.where(c == 3, h, ch)))))
        x = torch.stack(planes, dim=1)
    luma = (w0 * x[:, 0] + w1 * x[:, 1] + w2 * x[:, 2]).unsqueeze(1)
    return torch.where(gray.view(-1, 1, 1, 1), luma.expand_as(x), x)


def _blur_rows(x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    radius, side = (k.shape[1] - 1) // 2, x.shape[2]
    xp = torch.cat([x[:, :, 1:radius + 1].flip(2), x, x[:, :, -radius - 1:-1].flip(2)], 2)
    return sum(k[:, t].view(-1, 1, 1, 1) * xp[:, :, t:t + side] for t in range(2 * radius + 1))


def blur(x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Stage 2: separable blur of ``x`` ``(C, 3, S, S)`` float with per-sample kernels ``k``
    ``(C, K)`` (:func:`~simsiam.augment.kernels.blur_kernels`), reflect padding; columns
    first, as :func:`~simsiam.augment.kernels.gaussian_blur`."""
    y = _blur_rows(x, k)
    return _blur_rows(y.transpose(2, 3).contiguous(), k).transpose(2, 3)


def solarize_normalize(x: torch.Tensor, sol: torch.Tensor, mean: torch.Tensor,
                       std: torch.Tensor) -> torch.Tensor:
    """Stage 3: solarize (bool ``(C,)``), then ``(x - mean) / std``. (The flip, which
    commutes with both, is done while the chunk is copied out: a compiled flip is not
    vectorised and costs 25x an eager one.)"""
    x = torch.where(sol.view(-1, 1, 1, 1) & (x >= SOLARIZE_THRESHOLD), 1.0 - x, x)
    return (x - mean) / std


class ChunkedFinish:
    """:meth:`BatchedViewAugment.finish` on the CPU as compiled kernels over chunks.

    Args:
        mean, std: the normalisation, three floats each.
        max_sigma: the recipe's largest blur sigma (the kernels' common width), pixels.

    ``__call__(x, p)`` takes the views ``(B, 3, S, S)`` (uint8, or float in [0, 1]) and
    their :class:`~simsiam.augment.batched.BatchViewParams`, and returns normalised
    float32 ``(B, 3, S, S)``; None if compiling failed (the caller then runs the eager
    kernels; a :class:`~simsiam.errors.DataWarning` said why, once).
    """

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...],
                 max_sigma: float) -> None:
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
        self.max_sigma = max_sigma
        self.stages = (torch.compile(jitter_gray, dynamic=False),
                       torch.compile(blur, dynamic=False),
                       torch.compile(solarize_normalize, dynamic=False))
        self.failed: str | None = None
        self.sides: set[int] = set()  # view sides compiled for (each says so once)

    def __call__(self, x: torch.Tensor, p: BatchViewParams) -> torch.Tensor | None:
        if self.failed is not None:
            return None
        try:
            return self._run(x, p)
        except Exception as e:  # a compiler missing or failing: the eager kernels will do
            self.failed = f"{type(e).__name__}: {str(e).strip().splitlines()[0][:200]}"
            warnings.warn(f"augment.compile: compiling the CPU view kernels failed "
                          f"({self.failed}); the eager kernels run instead (slower on "
                          "large views). Set augment.compile=false to skip the attempt.",
                          DataWarning, stacklevel=2)
            return None

    def _run(self, x: torch.Tensor, p: BatchViewParams) -> torch.Tensor:
        stage1, stage2, stage3 = self.stages
        n, _, side, _ = x.shape
        if side not in self.sides:  # the first batch of this view size compiles
            self.sides.add(side)
            warnings.warn(f"augment.compile: compiling the CPU view kernels for {side} px views "
                          "(30-60 s the first time on this machine, seconds once PyTorch has "
                          "cached them; augment.compile=false skips it)", ConfigNotice,
                          stacklevel=4)
        chunk = max(1, min(n, CHUNK_BYTES // (3 * side * side * 4)))
        code = torch.where(p.jitter.view(-1, 1), p.order, NO_JITTER)
        factor = p.factors.gather(1, p.order)
        blurred, flipped = p.blur.tolist(), p.flip.tolist()
        kern = blur_kernels(p.sigma, self.max_sigma, side) if any(blurred) else None
        sol = p.solarize if p.solarize is not None else torch.zeros(n, dtype=torch.bool)
        out = torch.empty(n, 3, side, side)
        for lo in range(0, n, chunk):
            hi = min(n, lo + chunk)
            xs, cs, fs, gs, ss = _padded(slice(lo, hi), chunk, x, code, factor, p.grayscale, sol)
            y = stage1(xs, cs, fs, gs)
            for i in range(hi - lo):
                if blurred[lo + i]:
                    y[i:i + 1] = stage2(y[i:i + 1], kern[lo + i:lo + i + 1])
            y = stage3(y, ss, self.mean, self.std)
            for i in range(hi - lo):
                out[lo + i] = y[i].flip(-1) if flipped[lo + i] else y[i]
        return out


def _padded(rows: slice, chunk: int, *tensors: torch.Tensor) -> list[torch.Tensor]:
    """Each tensor's ``rows``, padded with its first row to ``chunk`` rows (one compiled
    shape for every chunk, the batch's last one included)."""
    out = []
    for t in tensors:
        part = t[rows]
        if part.shape[0] < chunk:
            part = torch.cat([part, part[:1].expand(chunk - part.shape[0], *part.shape[1:])])
        out.append(part)
    return out


__all__ = ["CHUNK_BYTES", "ChunkedFinish", "blur", "jitter_gray",
           "solarize_normalize"]
