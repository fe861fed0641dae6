"""The lightly side of benchmarks/lightly_compare.py; runs inside lightly's own venv.

Not meant to be run by hand: ``lightly_compare.py`` starts it as
``.cache/bench/lightly-venv/bin/python benchmarks/_lightly_runner.py SPEC.json`` and reads
the ``RESULT {json}`` line it prints last. It imports only torch, torchvision and lightly
(never simsiam), and builds the SimSiam step from lightly's published modules:
``SimSiamProjectionHead`` (or a 2-layer head from lightly's ``ProjectionHead`` blocks),
``SimSiamPredictionHead``, ``NegativeCosineSimilarity`` and ``SimSiamTransform``, on a
torchvision ``ImageFolder`` with a plain torch ``DataLoader``.

SPEC keys: mode ("speed" | "train"), root (ImageFolder root), files (JSON list of the
image paths to use), batch, workers, threads, seed, lr, momentum, weight_decay,
proj_layers (2 | 3); speed: warmup, steps; train: epochs, out (backbone state dict .pt).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

T_START = time.perf_counter()
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch  # noqa: E402
import torchvision  # noqa: E402
from _memory import TreeMemory  # noqa: E402  (stdlib only)
from torch import nn  # noqa: E402
from torch.utils.data import DataLoader, Subset  # noqa: E402

# lightly itself is imported where it is used: this file then imports (for the
# benchmark scripts' import test) without lightly installed.

CIFAR10_NORMALIZE = {"mean": [0.4914, 0.4822, 0.4465], "std": [0.2470, 0.2435, 0.2616]}


def projector(layers: int) -> nn.Module:
    """lightly's SimSiam projector: the published 3-layer head, or the CIFAR 2-layer one
    assembled from lightly's own ProjectionHead blocks (same block types, one fewer)."""
    from lightly.models.modules.heads import ProjectionHead, SimSiamProjectionHead

    if layers == 3:
        return SimSiamProjectionHead(512, 2048, 2048)
    return ProjectionHead([
        (512, 2048, nn.BatchNorm1d(2048), nn.ReLU(inplace=True)),
        (2048, 2048, nn.BatchNorm1d(2048, affine=False), None),
    ])


class LightlySimSiam(nn.Module):
    def __init__(self, proj_layers: int) -> None:
        from lightly.models.modules.heads import SimSiamPredictionHead

        super().__init__()
        self.backbone = torchvision.models.resnet18()  # ImageNet stem: 7x7 conv + maxpool
        self.backbone.fc = nn.Identity()
        self.projection_head = projector(proj_layers)
        self.prediction_head = SimSiamPredictionHead(2048, 512, 2048)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.projection_head(self.backbone(x).flatten(start_dim=1))
        return z.detach(), self.prediction_head(z)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("spec", help="a JSON file with the settings (see the module docstring)")
    args = p.parse_args(argv)
    memory = TreeMemory()
    import lightly
    from lightly.loss import NegativeCosineSimilarity
    from lightly.transforms import SimSiamTransform

    spec = json.loads(open(args.spec).read())
    torch.set_num_threads(spec["threads"])
    torch.manual_seed(spec["seed"])
    files = set(json.loads(open(spec["files"]).read()))
    transform = SimSiamTransform(input_size=32, gaussian_blur=0.0, normalize=CIFAR10_NORMALIZE)
    folder = torchvision.datasets.ImageFolder(spec["root"], transform=transform)
    keep = [i for i, (path, _) in enumerate(folder.samples) if path in files]
    if len(keep) != len(files):
        sys.exit(f"_lightly_runner: {len(files)} files asked, {len(keep)} found in ImageFolder")
    dataset = Subset(folder, keep)
    workers = spec["workers"]
    loader = DataLoader(dataset, batch_size=spec["batch"], shuffle=True, drop_last=True,
                        num_workers=workers, persistent_workers=workers > 0,
                        generator=torch.Generator().manual_seed(spec["seed"]))
    model = LightlySimSiam(spec["proj_layers"])
    criterion = NegativeCosineSimilarity()
    opt = torch.optim.SGD(model.parameters(), lr=spec["lr"], momentum=spec["momentum"],
                          weight_decay=spec["weight_decay"])
    model.train()

    def step(batch) -> torch.Tensor:
        (x0, x1), _ = batch
        z0, p0 = model(x0)
        z1, p1 = model(x1)
        loss = 0.5 * (criterion(p0, z1) + criterion(p1, z0))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.detach()

    def batches():
        while True:
            yield from loader

    result = {"lightly": lightly.__version__, "torch": torch.__version__,
              "images": len(dataset), "workers": workers,
              "proj_params": sum(p.numel() for p in model.projection_head.parameters())}
    setup_s = time.perf_counter() - T_START
    if spec["mode"] == "speed":
        it = batches()
        for _ in range(spec["warmup"]):
            step(next(it))
        memory.pause()
        t0 = time.perf_counter()
        for _ in range(spec["steps"]):
            loss = step(next(it))
        dt = time.perf_counter() - t0
        memory.resume()
        result |= {"pairs_per_s": spec["batch"] * spec["steps"] / dt, "seconds": dt,
                   "loss": float(loss)}
        it.close()
    else:
        per_epoch = len(loader)
        total = per_epoch * spec["epochs"]
        t0, n, losses = time.perf_counter(), 0, []
        for epoch in range(spec["epochs"]):
            for batch in loader:
                # cosine per step to 0 over the run, no warmup: the same rule as ours
                lr = spec["lr"] * 0.5 * (1.0 + math.cos(math.pi * n / total))
                for group in opt.param_groups:
                    group["lr"] = lr
                losses.append(step(batch))
                n += 1
            print(f"lightly epoch {epoch + 1}: mean loss "
                  f"{float(torch.stack(losses[-per_epoch:]).mean()):.4f}", flush=True)
        result |= {"train_seconds": time.perf_counter() - t0, "steps": n,
                   "final_loss": float(torch.stack(losses[-per_epoch:]).mean())}
        torch.save(model.backbone.state_dict(), spec["out"])  # torchvision keys, no fc
    result |= {"setup_s": setup_s} | memory.stop()
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
