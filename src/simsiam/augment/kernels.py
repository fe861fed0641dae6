"""The pixel kernels of the batched view recipe (:mod:`simsiam.augment.batched`): each
takes a whole batch, with one random parameter per sample.

- crop + resize: per-sample boxes (:func:`sample_crops`, torchvision's RandomResizedCrop
  rule), then one batched resample as two matrix products with per-sample interpolation
  weights. The weights are those of torchvision's ``resized_crop(..., antialias=True)``
  (the separable triangle filter that PIL and
  ``torch.nn.functional.interpolate(antialias=True)`` use: support 1 when enlarging,
  ``in/out`` when shrinking), so the output equals torchvision's for the same box.
- colour jitter: brightness, contrast, saturation, hue with torchvision's definitions
  (blend with black, with the mean grey level, with the grey image; hue rotation in
  HSV).
- grayscale (ITU-R 601-2 luma, 3 channels), Gaussian blur (per-sample sigma, kernel
  ``2 * ceil(3 sigma) + 1``, reflect padding: torchvision's kernel per sample), solarize
  (values >= 0.5 become 1 - value, torchvision's ``solarize``), flip.

All operations take float images in [0, 1] of shape ``(B, 3, H, W)``; factors are
``(B,)`` tensors on the same device. No operation synchronises with the host on CUDA.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from simsiam.augment.views import SOLARIZE_THRESHOLD

GRAY_WEIGHTS = (0.2989, 0.587, 0.114)  # torchvision rgb_to_grayscale (ITU-R 601-2)


def as_column(v: torch.Tensor) -> torch.Tensor:
    """A per-sample ``(B,)`` tensor as ``(B, 1, 1, 1)``, to broadcast over images."""
    return v.view(-1, 1, 1, 1)


def sample_crops(g: torch.Generator, n: int, height: int, width: int,
                 scale: tuple[float, float], ratio: tuple[float, float],
                 device: torch.device | str = "cpu") -> tuple[torch.Tensor, ...]:
    """``n`` RandomResizedCrop boxes ``(top, left, h, w)``, each an int64 ``(n,)`` tensor.

    torchvision's ``RandomResizedCrop.get_params`` rule, vectorised: 10 tries of an area
    fraction uniform in ``scale`` and a log-uniform aspect ratio in ``ratio``; the first
    try that fits is used, and a sample with none falls back to the central crop with the
    ratio clamped into range. Top and left are uniform over the positions that fit.
    """
    area = height * width
    u = torch.rand(n, 10, generator=g, device=device, dtype=torch.float64)
    target = area * (scale[0] + (scale[1] - scale[0]) * u)
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(log_lo + (log_hi - log_lo) * torch.rand(n, 10, generator=g,
                                                               device=device,
                                                               dtype=torch.float64))
    w = torch.round(torch.sqrt(target * aspect)).long()
    h = torch.round(torch.sqrt(target / aspect)).long()
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = fits.float().argmax(dim=1, keepdim=True)  # index of the first try that fits
    any_fit = fits.any(dim=1)
    w = w.gather(1, first).squeeze(1)
    h = h.gather(1, first).squeeze(1)
    in_ratio = width / height
    if in_ratio < ratio[0]:
        fw, fh = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        fw, fh = int(round(height * ratio[1])), height
    else:
        fw, fh = width, height
    w = torch.where(any_fit, w, torch.full_like(w, fw))
    h = torch.where(any_fit, h, torch.full_like(h, fh))
    pos = torch.rand(n, 2, generator=g, device=device, dtype=torch.float64)
    top = torch.floor(pos[:, 0] * (height - h + 1)).long()
    left = torch.floor(pos[:, 1] * (width - w + 1)).long()
    top = torch.where(any_fit, top, (height - h) // 2)
    left = torch.where(any_fit, left, (width - w) // 2)
    return top, left, h, w


def resample_weights(start: torch.Tensor, length: torch.Tensor, in_size: int,
                     out_size: int) -> torch.Tensor:
    """Per-sample interpolation matrices ``(B, out_size, in_size)`` (float32).

    Row ``i`` of sample ``b`` holds the antialiased-bilinear weights that output pixel
    ``i`` gives to input pixels ``start[b] .. start[b] + length[b] - 1``: the filter of
    ``torch.nn.functional.interpolate(mode="bilinear", antialias=True)`` (and of PIL),
    with ``scale = length / out_size``, support ``max(scale, 1)``, the window of pixels
    ``[trunc(c - support + 0.5), trunc(c + support + 0.5))`` around centre
    ``c = scale * (i + 0.5)``, weights normalised to sum 1.
    """
    dev = start.device
    scale = (length.float() / out_size).view(-1, 1, 1)  # (B, 1, 1)
    support = torch.clamp(scale, min=1.0)
    centre = scale * (torch.arange(out_size, device=dev, dtype=torch.float32).view(1, -1, 1)
                      + 0.5)
    j = torch.arange(in_size, device=dev, dtype=torch.float32).view(1, 1, -1) \
        - start.float().view(-1, 1, 1)  # input index relative to the crop
    lo = torch.clamp(torch.trunc(centre - support + 0.5), min=0.0)
    hi = torch.minimum(torch.trunc(centre + support + 0.5), length.float().view(-1, 1, 1))
    w = torch.clamp(1.0 - torch.abs((j - centre + 0.5) / support), min=0.0)
    w = w * ((j >= lo) & (j < hi))
    return w / w.sum(dim=2, keepdim=True).clamp_min(1e-12)


def resized_crop(images: torch.Tensor, top: torch.Tensor, left: torch.Tensor,
                 height: torch.Tensor, width: torch.Tensor, size: int) -> torch.Tensor:
    """Crop each image to its box and resize it to ``size`` x ``size`` in one pass.

    Args:
        images: ``(B, C, H, W)`` float (or uint8, read as its values).
        top, left, height, width: int64 ``(B,)`` boxes inside the images.
        size: output side in pixels.

    Returns:
        float32 ``(B, C, size, size)``, equal to torchvision's ``resized_crop`` with
        ``antialias=True`` on float input for the same boxes (to float32 rounding).
    """
    bsz, c, hgt, wid = images.shape
    wy = resample_weights(top, height, hgt, size)  # (B, S, H)
    wx = resample_weights(left, width, wid, size)  # (B, S, W)
    # Rows first: (B, S, H) @ (B, H, C*W), then columns: (B, S*C, W) @ (B, W, S).
    x = images.float().permute(0, 2, 1, 3).reshape(bsz, hgt, c * wid)
    x = torch.bmm(wy, x).reshape(bsz, size * c, wid)
    x = torch.bmm(x, wx.transpose(1, 2))  # (B, S*C, S): rows (S, C), columns S
    return x.reshape(bsz, size, c, size).permute(0, 2, 1, 3).contiguous()


def rgb_to_grayscale(x: torch.Tensor) -> torch.Tensor:
    """Luma ``(B, 1, H, W)`` of RGB ``(B, 3, H, W)`` with torchvision's weights."""
    r, g, b = x.unbind(dim=1)
    return (GRAY_WEIGHTS[0] * r + GRAY_WEIGHTS[1] * g + GRAY_WEIGHTS[2] * b).unsqueeze(1)


def _blend(x: torch.Tensor, other: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    f = as_column(factor)
    return (f * x + (1.0 - f) * other).clamp_(0.0, 1.0)


def adjust_brightness(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """``clamp(x * factor)`` per sample (torchvision: blend with black)."""
    return (x * as_column(factor)).clamp_(0.0, 1.0)


def adjust_contrast(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Blend each image with its mean grey level (torchvision's definition)."""
    mean = rgb_to_grayscale(x).mean(dim=(1, 2, 3), keepdim=True)
    return _blend(x, mean, factor)


def adjust_saturation(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Blend each image with its greyscale version (torchvision's definition)."""
    return _blend(x, rgb_to_grayscale(x), factor)


def adjust_hue(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rotate the hue of each image by ``shift`` turns (in [-0.5, 0.5]), in HSV space.

    Hue, saturation and value as in torchvision's ``adjust_hue`` (hexcone model); the
    rotated colour is rebuilt with the closed form ``v - v s clamp(min(k, 4 - k), 0, 1)``,
    ``k = (n + 6 h) mod 6`` for n = 5, 3, 1 (R, G, B), which equals the sector formula.
    """
    r, g, b = x.unbind(dim=1)
    v, _ = x.max(dim=1)
    m, _ = x.min(dim=1)
    chroma = v - m
    flat = chroma == 0
    safe = torch.where(flat, torch.ones_like(chroma), chroma)
    s = chroma / torch.where(v == 0, torch.ones_like(v), v)
    rc, gc, bc = (v - r) / safe, (v - g) / safe, (v - b) / safe
    h = torch.where(v == r, bc - gc, torch.where(v == g, 2.0 + rc - bc, 4.0 + gc - rc))
    h = torch.where(flat, torch.zeros_like(h), h)
    h = torch.remainder(h / 6.0 + as_column(shift).squeeze(1), 1.0)
    out = []
    for n in (5.0, 3.0, 1.0):
        k = torch.remainder(n + 6.0 * h, 6.0)
        out.append(v - v * s * torch.clamp(torch.minimum(k, 4.0 - k), 0.0, 1.0))
    return torch.stack(out, dim=1)


JITTER_OPS = (adjust_brightness, adjust_contrast, adjust_saturation, adjust_hue)


def blur_kernels(sigma: torch.Tensor, max_sigma: float | None, side: int) -> torch.Tensor:
    """Each sample's 1-d Gaussian, float32 ``(B, 2 R + 1)`` for sigmas ``(B,)`` (pixels).

    Sample ``b`` has torchvision's kernel of side ``2 * ceil(3 sigma_b) + 1`` (zero beyond
    it); all share the width of the largest, ``R = min(ceil(3 max_sigma), side - 1)``
    (``max_sigma`` None: read from ``sigma``), so one reflect padding serves the batch.
    """
    radius_each = torch.ceil(3.0 * sigma.double())  # (B,)
    top = max_sigma if max_sigma is not None else float(sigma.max())
    radius = min(math.ceil(3.0 * top), side - 1)
    u = torch.arange(-radius, radius + 1, device=sigma.device, dtype=torch.float64)
    k = torch.exp(-0.5 * (u.view(1, -1) / sigma.double().view(-1, 1)) ** 2)
    k = k * (u.abs().view(1, -1) <= radius_each.view(-1, 1))
    return (k / k.sum(dim=1, keepdim=True)).float()


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor,
                  max_sigma: float | None = None) -> torch.Tensor:
    """Blur each image with its own sigma (``(B,)``, pixels); kernel side
    ``2 * ceil(3 sigma) + 1`` per sample, reflect padding: torchvision's
    ``gaussian_blur`` with that kernel, for each sample.

    ``max_sigma`` bounds every sigma (the recipe's upper end) so that the shared kernel
    width is known without reading ``sigma`` back from the device; None reads it.
    """
    bsz, c, hgt, wid = x.shape
    k = blur_kernels(sigma, max_sigma, min(hgt, wid))  # (B, K)
    radius = (k.shape[1] - 1) // 2
    kc = k.repeat_interleave(c, dim=0)  # (B*C, K)
    y = F.pad(x.reshape(1, bsz * c, hgt, wid), (radius, radius, radius, radius), mode="reflect")
    y = F.conv2d(y, kc.view(bsz * c, 1, -1, 1), groups=bsz * c)
    y = F.conv2d(y, kc.view(bsz * c, 1, 1, -1), groups=bsz * c)
    return y.view(bsz, c, hgt, wid)


def grayscale3(x: torch.Tensor) -> torch.Tensor:
    """Grayscale with 3 equal channels: ``(B, 3, H, W)`` -> ``(B, 3, H, W)``."""
    return rgb_to_grayscale(x).expand_as(x)


def hflip(x: torch.Tensor) -> torch.Tensor:
    """Horizontal flip of ``(B, C, H, W)`` images."""
    return x.flip(-1)


def apply_selected(x: torch.Tensor, selected: torch.Tensor, op,
                   *args: torch.Tensor | float | None) -> torch.Tensor:
    """``op(x, *args)`` for the ``selected`` samples (bool ``(B,)``), ``x`` for the others.

    Per-sample tensor arguments (``(B,)``) are indexed with the selection. On the CPU only
    the selected samples are computed (in place in ``x``); on CUDA the whole batch is, and
    ``torch.where`` selects, so the host never waits for the device."""
    if x.device.type != "cpu":
        return torch.where(as_column(selected), op(x, *args), x)
    idx = selected.nonzero().squeeze(1)
    if len(idx):
        sub = [a[idx] if isinstance(a, torch.Tensor) else a for a in args]
        x[idx] = op(x[idx], *sub)
    return x


def solarize(x: torch.Tensor, selected: torch.Tensor) -> torch.Tensor:
    """Solarize the ``selected`` (bool ``(B,)``) images of ``x`` ``(B, C, H, W)`` in [0, 1]:
    values >= 0.5 become ``1 - value`` (torchvision's ``solarize``, BYOL's threshold)."""
    return torch.where(as_column(selected) & (x >= SOLARIZE_THRESHOLD), 1.0 - x, x)
