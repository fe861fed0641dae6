"""Check PyTorch's CPU convolution under bf16 autocast against float32, layer by layer.

Found while testing ``simsiam reproduce`` at 16 px: ResNet layer4's first 3x3 stride-2
convolution then sees a 1x1 input, so its eight off-centre taps touch only padding and
their weight gradient must be exactly 0. Under bf16 autocast on this CPU they get
garbage (NaN, inf or large values, differing from run to run, as from uninitialised
memory). The trainer checks parameters before every save (``simsiam.train.guards``).
Run: ``python benchmarks/bf16_conv_check.py``.
"""

from __future__ import annotations

import argparse

import torch

SHAPES = [  # (in, out, kernel, stride, padding, input side): ResNet-18 layer4 at 16 / 32 px
    (256, 512, 3, 2, 1, 1), (256, 512, 3, 2, 1, 2), (256, 512, 1, 2, 0, 2),
    (512, 512, 3, 1, 1, 1), (256, 512, 3, 2, 1, 4),
]


def main(argv: list[str] | None = None) -> None:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args(argv)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}; relative error of bf16 autocast vs float32")
    for cin, cout, k, s, p, hw in SHAPES:
        for cl in (False, True):
            fmt = torch.channels_last if cl else torch.contiguous_format
            conv = torch.nn.Conv2d(cin, cout, k, s, p, bias=False).to(memory_format=fmt)
            x = torch.randn(32, cin, hw, hw)
            side = (hw + 2 * p - k) // s + 1
            gy = torch.randn(32, cout, side, side)
            res = {}
            for bf16 in (False, True):
                xx = x.clone().contiguous(memory_format=fmt).requires_grad_(True)
                conv.weight.grad = None
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                    y = conv(xx)
                (y.float() * gy).sum().backward()
                res[bf16] = (y.detach().float(), xx.grad.clone(), conv.weight.grad.clone())

            def rel(i: int, res: dict = res) -> float:
                a, b = res[True][i], res[False][i]
                return float((a - b).norm() / b.norm())

            bad = int((~torch.isfinite(res[True][2])).sum())
            print(f"conv {cin}->{cout} k{k} s{s} on {hw}x{hw}, channels_last={cl!s:5}: "
                  f"output {rel(0):.4f}  grad input {rel(1):.4f}  grad weight {rel(2):.4g}  "
                  f"non-finite in grad weight {bad}")


if __name__ == "__main__":
    main()
