"""Our side of benchmarks/lightly_compare.py; runs in the project's venv.

Not meant to be run by hand: ``lightly_compare.py`` starts it as
``python benchmarks/_ours_runner.py SPEC_JSON`` and reads the ``RESULT {json}`` line it
prints last. It uses only simsiam's public API (``simsiam.bench``, ``simsiam.config``,
``simsiam.data``, ``simsiam.methods``, ``simsiam.train``).

SPEC keys: mode ("speed" | "train"), data, per_class, batch, threads, lr; optional amp
("auto" | "fp32"), channels_last, seed; speed: warmup, steps; train: epochs, out.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

T_START = time.perf_counter()
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _memory import TreeMemory  # noqa: E402  (stdlib only)

MOMENTUM, WEIGHT_DECAY, SEED = 0.9, 5e-4, 0


def ours_config(spec: dict):
    """The demo preset with the benchmark's settings (the same rule as the lightly side)."""
    from simsiam.config import load_config

    over = {"data.source": spec["data"], "data.per_class": spec["per_class"],
            "train.batch_size": spec["batch"], "train.device": "cpu",
            "train.amp": spec.get("amp", "auto"),
            "train.channels_last": spec.get("channels_last", True),
            "train.seed": spec.get("seed", SEED),
            "optim.base_lr": spec["lr"] * 256 / spec["batch"],
            "optim.momentum": MOMENTUM, "optim.weight_decay": WEIGHT_DECAY}
    if spec.get("compile") is not None:  # None: the preset's train.compile
        over["train.compile"] = spec["compile"]
    if spec["mode"] == "speed":
        over["data.test_per_class"] = 1  # only the training images matter here
    else:  # the trainer, with the same optimizer rule as the lightly loop
        over |= {"train.epochs": spec["epochs"], "train.out": spec["out"],
                 "optim.warmup_epochs": 0.0, "model.simsiam.fix_pred_lr": False,
                 "optim.schedule": "step", "eval.knn_every": 0, "eval.knn_at_start": False,
                 "eval.online_probe": False,
                 # torchvision's init, as lightly's backbone has (the official SimSiam
                 # zero-initialised residual branches learn slower in 234 steps)
                 "model.zero_init_residual": False}
    return load_config("demo-cpu", over)


def speed(spec: dict, cfg, memory: TreeMemory) -> dict:
    """Time ``steps`` full training steps (next batch + step) after ``warmup`` steps."""
    import torch

    from simsiam.bench import EndlessBatches
    from simsiam.data import load_splits, make_batches
    from simsiam.methods import build_method
    from simsiam.train import build_optimizer, train_step, use_bf16

    device = torch.device("cpu")
    train, _ = load_splits(cfg.data, cfg.train.seed, progress=False)
    torch.manual_seed(cfg.train.seed)
    fmt = torch.channels_last if cfg.train.channels_last else torch.preserve_format
    model = build_method(cfg.method, cfg.model).to(memory_format=fmt)
    # one lr for all parameters, as the lightly side (no fixed predictor lr in the timing)
    opt = build_optimizer(model.param_groups(), cfg.optim, spec["lr"])
    batches = EndlessBatches(make_batches(model.batch_kind, train, cfg, device))
    bf16 = use_bf16(cfg.train.amp, device)
    compiled = bool(cfg.train.compile)  # as the trainer does
    step_model = torch.compile(model) if compiled else model
    model.train()
    out = {"bf16": bf16, "images": len(train), "setup_s": time.perf_counter() - T_START,
           "compile": compiled}
    losses = []
    t_first = time.perf_counter()
    for i in range(spec["warmup"] + spec["steps"]):
        if i == 1:
            out["first_step_s"] = time.perf_counter() - t_first  # the compile, when on
        if i == spec["warmup"]:
            memory.pause()
            t0 = time.perf_counter()
        batch = next(batches).to(device, fmt)
        losses.append(train_step(step_model, opt, batch.inputs, bf16)[0])
    dt = time.perf_counter() - t0
    memory.resume()
    return out | {"pairs_per_s": spec["batch"] * spec["steps"] / dt, "seconds": dt,
                  "loss": float(losses[-1])}


def train(cfg) -> dict:
    """A whole run with the real trainer; the last epoch's mean loss and the backbone."""
    import torch

    from simsiam.train import pretrain, read_metrics, use_bf16

    t0 = time.perf_counter()
    res = pretrain(cfg, overwrite=True, progress=False)
    total = time.perf_counter() - t0
    epochs = [r for r in read_metrics(cfg.train.out) if r.get("kind") == "epoch"]
    return {"bf16": use_bf16(cfg.train.amp, torch.device("cpu")), "steps": res.steps,
            "train_seconds": sum(r["seconds"] for r in epochs), "pretrain_s": total,
            "final_loss": res.epoch_loss[res.epochs], "backbone": str(res.backbone_path)}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("spec", help="the benchmark's settings as JSON (see the module docstring)")
    spec = json.loads(p.parse_args(argv).spec)
    memory = TreeMemory()
    import torch

    torch.set_num_threads(spec["threads"])
    cfg = ours_config(spec)
    result = {"amp": cfg.train.amp, "channels_last": cfg.train.channels_last,
              "backend": cfg.augment.backend}
    result |= speed(spec, cfg, memory) if spec["mode"] == "speed" else train(cfg)
    result |= memory.stop()
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
