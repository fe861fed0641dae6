"""Our SimSiam training step against the same step built from lightly's published modules.

Commands (from the repository root, with the project's venv)::

    export SIMSIAM_CACHE_DIR=$PWD/.cache
    .venv/bin/python benchmarks/lightly_compare.py setup
    .venv/bin/python benchmarks/lightly_compare.py speed [--runs 5] [--steps 30] [--batch 128]
    .venv/bin/python benchmarks/lightly_compare.py knn [--epochs 3] [--per-class 1000] \\
        [--workers N]

Parts: this driver (argument parsing, the subprocesses, the tables); ``_lightly_venv.py``
(lightly's venv); ``_ours_runner.py`` (our side, simsiam's public API only, in the
project's venv); ``_lightly_runner.py`` (lightly's side, in lightly's venv); ``_memory.py``
(peak memory of a process tree, stdlib only, used by both sides).

``setup`` makes a separate venv, ``.cache/bench/lightly-venv`` (``python -m venv`` and plain
pip), with ``torch==2.14.1 torchvision==0.29.1 lightly``; it does nothing when that venv
already imports them. lightly is used only as an installed library, from
``benchmarks/_lightly_runner.py``, which runs in that venv and never imports simsiam.

``speed``: first one lightly run each with DataLoader ``num_workers`` 0, 1 and 2 (all
three reported); the fastest is used for the alternating runs lightly, ours, lightly,
ours, ... (``--runs`` of each), plus one (``--fp32-runs``) run of ours with
``train.amp=fp32`` and ``train.channels_last=false`` and one (``--compile-runs``) with
``train.compile=true`` (its compile, in the warm-up steps, is printed, not timed). Every
run is a fresh subprocess with ``torch.set_num_threads(--threads)``; it times ``--steps``
full training steps after ``--warmup`` steps: next batch from the loader (loading +
augmentation) + forward + backward + SGD step. It reports median/min/max pairs/s per
setting, the ratio ours/lightly of the medians, and each subprocess's peak memory (largest
over the runs of a row): ``RSS main`` its own ``ru_maxrss``; ``workers RSS`` the largest
sum of its DataLoader workers' RSS; ``PSS all`` the largest sum of PSS over the process
and its workers (shared pages split, so the footprint of the whole pipeline), sampled
every 0.25 s from ``/proc`` by :class:`TreeMemory` in both sides.

``knn``: both train ``--epochs`` epochs on the first ``--per-class`` images of each class
(the same files), with the same optimizer rule, then both backbones are scored by the
same evaluator, ``simsiam knn --checkpoint FILE --data DATA --per-class N --image-size 32
--normalize cifar10`` (bank: the same N per class; queries: all 10,000 test images).
lightly's backbone is saved as a torchvision-keyed state dict (``.pt``); ours is the run's
``backbone.safetensors``. Prints both accuracies and each training's wall time.

Held equal on both sides: the CIFAR-10 JPEGs (the first N files per class, same files),
torchvision ResNet-18 with the ImageNet stem (7x7 conv + max-pool, ``fc`` = Identity),
32 px views, the SimSiam CIFAR heads (projector 512-2048-2048 in 2 layers, the last BN
affine-free; predictor 2048-512-2048), two separate encoder passes per step, symmetric
negative cosine with stop-gradient, SGD momentum 0.9, lr 0.06 (batch 128), weight decay
5e-4 on all parameters, batch 128 with drop_last, the view recipe (crop scale 0.2-1,
jitter 0.4/0.4/0.4/0.1 p=0.8, grayscale p=0.2, flip p=0.5, no blur), CIFAR-10
normalisation, the thread count, the warm-up/timed step counts. In ``knn``: the same
schedule (cosine per step to 0, no warm-up, one lr for all parameters including the
predictor), torchvision's weight init (our side sets ``model.zero_init_residual=false``;
the official SimSiam init learns slower in so few steps) and the same kNN evaluator.
``knn --amp fp32`` also runs our side in float32 with contiguous tensors, as lightly's.

What differs (by design: each side as its library is meant to be used):

- Input path. Ours decodes the JPEGs once into a uint8 cache (``$SIMSIAM_CACHE_DIR``;
  decoding is outside the timed steps, and after the first run it is a file read) and
  makes each batch's views in one batched tensor pass in the training process
  (``augment.backend=batched``). lightly decodes every JPEG with PIL at every access and
  augments one PIL image at a time (torchvision transforms) in DataLoader workers or in
  the training process.
- Numerics. Ours runs the forward pass under bfloat16 autocast on this CPU (it has native
  bf16; ``train.amp=auto``) with channels_last tensors; lightly's step is float32,
  contiguous. The ``ours fp32`` row switches both off (its loader is still ours).
- Optimizer kernel: ours uses ``SGD(fused=True)`` as the trainer does; lightly's step the
  default (foreach) SGD. Same update rule.
- Projector: lightly 1.6's ``SimSiamProjectionHead(512, 2048, 2048)`` has 3 Linear layers
  (the ImageNet head; there is no layer-count argument). The default here
  (``--lightly-proj 2``) builds the 2-layer CIFAR head from lightly's own
  ``ProjectionHead`` blocks so the networks are the same size; ``--lightly-proj 3`` uses
  the published head as is (4.2M more parameters, a slower step).
- ``knn``: ours trains with the real trainer (``simsiam.train.pretrain``), kNN
  monitor and online probe off; its wall time includes loading the decoded cache (and
  decoding it on a first run, train and test). lightly's loop is the plain one in
  ``_lightly_runner.py``. Initialisations and shuffles come from different generators.
- Not part of either timed step: our online linear probe, metrics logging, checkpoints.
"""


from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _lightly_venv import BENCH, REPO, VPY, need_venv, setup

RUNNER = Path(__file__).resolve().parent / "_lightly_runner.py"
OURS = Path(__file__).resolve().parent / "_ours_runner.py"
DEFAULT_DATA = "/work/shared/data/cifar10-jpeg"

LR, MOMENTUM, WEIGHT_DECAY, SEED = 0.06, 0.9, 5e-4, 0
BATCH_REF = 128  # lr 0.06 at batch 128; scaled linearly for other --batch


# --- subprocesses ------------------------------------------------------------------------

def _run_child(cmd: list[str], env: dict[str, str] | None = None) -> dict:
    """Run one child; return its ``RESULT {json}`` plus wall seconds. Exits on failure."""
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-4000:])
        sys.exit(f"child failed (exit {proc.returncode}): {' '.join(cmd)}")
    out = json.loads(lines[-1][len("RESULT "):])
    out["wall_s"] = wall
    return out


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("SIMSIAM_CACHE_DIR", str(REPO / ".cache"))
    return env


def _file_list(data: str, per_class: int) -> Path:
    """The first ``per_class`` training files of each class, as our loader picks them."""
    from simsiam.data import first_per_class, scan_image_folder

    paths, labels, _ = scan_image_folder(Path(data) / "train")
    keep = first_per_class(labels, per_class)
    out = BENCH / f"files-{per_class}.json"
    BENCH.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps([str(paths[i]) for i in keep]))
    return out


def _lightly(spec: dict) -> dict:
    BENCH.mkdir(parents=True, exist_ok=True)
    path = BENCH / f"spec-{os.getpid()}.json"
    path.write_text(json.dumps(spec))
    return _run_child([str(VPY), str(RUNNER), str(path)])


def _ours(spec: dict) -> dict:
    return _run_child([sys.executable, str(OURS), json.dumps(spec)], _child_env())


# --- speed -------------------------------------------------------------------------------

def _row(side: str, setting: str, runs: list[dict]) -> str:
    rates = [r["pairs_per_s"] for r in runs]
    mem = [max(r[k] for r in runs) for k in ("rss_main_mib", "rss_children_mib", "pss_tree_mib")]
    return (f"{side:8s} {setting:34s} {len(runs):>4d} {statistics.median(rates):>9.1f} "
            f"{min(rates):>7.1f} {max(rates):>7.1f} {mem[0]:>9.0f} {mem[1]:>8.0f} {mem[2]:>8.0f}")


HEADER = (f"{'side':8s} {'setting':34s} {'runs':>4s} {'median':>9s} {'min':>7s} {'max':>7s} "
          f"{'RSS main':>9s} {'workers':>8s} {'PSS all':>8s}\n"
          f"{'':8s} {'':34s} {'':>4s} {'pairs/s':>9s} {'':>7s} {'':>7s} {'MiB':>9s} "
          f"{'RSS MiB':>8s} {'MiB':>8s}")


def speed(args: argparse.Namespace) -> None:
    need_venv()
    files = _file_list(args.data, args.per_class)
    lr = LR * args.batch / BATCH_REF
    common = {"batch": args.batch, "threads": args.threads, "seed": SEED, "lr": lr,
              "warmup": args.warmup, "steps": args.steps}
    lspec = common | {"mode": "speed", "root": str(Path(args.data) / "train"),
                      "files": str(files), "momentum": MOMENTUM, "weight_decay": WEIGHT_DECAY,
                      "proj_layers": args.lightly_proj}
    ospec = common | {"mode": "speed", "data": args.data, "per_class": args.per_class}
    print(f"speed: batch {args.batch}, {args.per_class} images/class, {args.threads} threads, "
          f"{args.warmup} warm-up + {args.steps} timed steps per run", flush=True)

    probe: dict[int, dict] = {}
    for w in (0, 1, 2):
        probe[w] = _lightly(lspec | {"workers": w})
        r = probe[w]
        print(f"  lightly num_workers={w}: {r['pairs_per_s']:.1f} pairs/s (peak RSS main "
              f"{r['rss_main_mib']:.0f} MiB, workers {r['rss_children_mib']:.0f} MiB, "
              f"PSS all {r['pss_tree_mib']:.0f} MiB)", flush=True)
    best = max(probe, key=lambda w: probe[w]["pairs_per_s"])
    (BENCH / "lightly-workers.json").write_text(json.dumps({"workers": best}))
    info = probe[best]
    print(f"  fastest: num_workers={best}; lightly {info['lightly']}, torch {info['torch']}",
          flush=True)

    light, ours, ours32, ours_c = [], [], [], []
    for i in range(args.runs):
        light.append(_lightly(lspec | {"workers": best}))
        print(f"  run {i + 1}/{args.runs}: lightly {light[-1]['pairs_per_s']:.1f}", end="",
              flush=True)
        ours.append(_ours(ospec))
        print(f", ours {ours[-1]['pairs_per_s']:.1f}", end="", flush=True)
        if i < args.fp32_runs:
            ours32.append(_ours(ospec | {"amp": "fp32", "channels_last": False}))
            print(f", ours fp32 {ours32[-1]['pairs_per_s']:.1f}", end="", flush=True)
        if i < args.compile_runs:
            ours_c.append(_ours(ospec | {"compile": True}))
            print(f", ours compiled {ours_c[-1]['pairs_per_s']:.1f} (compile "
                  f"{ours_c[-1]['first_step_s']:.0f} s)", end="", flush=True)
        print(" pairs/s", flush=True)

    proj = ("published SimSiamProjectionHead (3 layers)" if args.lightly_proj == 3 else
            "2-layer ProjectionHead blocks")
    print()
    print(HEADER)
    for w in (0, 1, 2):
        print(_row("lightly", f"fp32 num_workers={w} (probe)", [probe[w]]))
    print(_row("lightly", f"fp32 num_workers={best}", light))
    o = ours[0]
    print(_row("ours", f"{'bf16' if o['bf16'] else 'fp32'}"
                       f"{' channels_last' if o['channels_last'] else ''} {o['backend']}", ours))
    if ours32:
        print(_row("ours", f"fp32 contiguous {ours32[0]['backend']}", ours32))
    if ours_c:
        print(_row("ours", "as above + train.compile", ours_c))
    med_l = statistics.median(r["pairs_per_s"] for r in light)
    med_o = statistics.median(r["pairs_per_s"] for r in ours)
    print(f"\nratio ours/lightly (medians): {med_o / med_l:.2f}x", end="")
    if ours32:
        med_32 = statistics.median(r["pairs_per_s"] for r in ours32)
        print(f"; ours fp32 contiguous / lightly: {med_32 / med_l:.2f}x", end="")
    print()
    print(f"lightly {info['lightly']}: SimSiamProjectionHead(512, 2048, 2048) has 3 Linear "
          f"layers (no layer-count argument); the lightly rows use: {proj} "
          f"({info['proj_params']:,} parameters)")
    print(f"setup before the timed steps (median s): lightly "
          f"{statistics.median(r['setup_s'] for r in light):.1f}, ours "
          f"{statistics.median(r['setup_s'] for r in ours):.1f}")


# --- knn ---------------------------------------------------------------------------------

def _knn_eval(checkpoint: str, args: argparse.Namespace) -> str:
    exe = Path(sys.executable).parent / "simsiam"
    cmd = [str(exe), "knn", "--checkpoint", checkpoint, "--data", args.data,
           "--per-class", str(args.per_class), "--image-size", "32", "--normalize", "cifar10",
           "--device", "cpu", "--no-progress"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_child_env())
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout + proc.stderr)
        sys.exit(f"kNN evaluation failed: {' '.join(cmd)}")
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("knn:")][-1]
    return line.split("top1=")[1].split()[0], line  # "12.34%", the evaluator's line


def knn(args: argparse.Namespace) -> None:
    need_venv()
    if args.workers is None:  # the fastest of the last speed probe, else 0
        saved = BENCH / "lightly-workers.json"
        args.workers = json.loads(saved.read_text())["workers"] if saved.exists() else 0
    files = _file_list(args.data, args.per_class)
    lr = LR * args.batch / BATCH_REF
    out = BENCH / "knn"
    out.mkdir(parents=True, exist_ok=True)
    lpath = out / "lightly_backbone.pt"
    common = {"batch": args.batch, "threads": args.threads, "seed": args.seed, "lr": lr,
              "epochs": args.epochs, "mode": "train"}
    print(f"knn: {args.epochs} epochs on {args.per_class} images/class, batch {args.batch}, "
          f"lr {lr} cosine per step, {args.threads} threads", flush=True)
    light = _lightly(common | {"root": str(Path(args.data) / "train"), "files": str(files),
                               "momentum": MOMENTUM, "weight_decay": WEIGHT_DECAY,
                               "proj_layers": args.lightly_proj, "workers": args.workers,
                               "out": str(lpath)})
    print(f"  lightly trained: {light['steps']} steps, {light['train_seconds']:.1f} s", flush=True)
    ours = _ours(common | {"data": args.data, "per_class": args.per_class,
                           "out": str(out / "ours"), "amp": args.amp,
                           "channels_last": args.amp != "fp32"})
    print(f"  ours trained: {ours['steps']} steps, {ours['train_seconds']:.1f} s", flush=True)
    acc_l = _knn_eval(str(lpath), args)
    acc_o = _knn_eval(ours["backbone"], args)
    print()
    print(f"{'side':8s} {'setting':38s} {'steps':>5s} {'train s':>8s} {'wall s':>7s} "
          f"{'loss':>7s} {'PSS MiB':>8s} {'kNN top1':>8s}")
    setting_l = f"fp32 num_workers={args.workers} proj={args.lightly_proj}L"
    setting_o = (f"{'bf16 channels_last' if ours['bf16'] else 'fp32 contiguous'} batched "
                 f"seed {args.seed}")
    setting_l += f" seed {args.seed}"
    for side, setting, r, acc in (("lightly", setting_l, light, acc_l),
                                  ("ours", setting_o, ours, acc_o)):
        print(f"{side:8s} {setting:38s} {r['steps']:>5d} {r['train_seconds']:>8.1f} "
              f"{r['wall_s']:>7.1f} {r['final_loss']:>7.4f} "
              f"{r['pss_tree_mib']:>8.0f} {acc[0]:>8s}")
    print(f"evaluator lines: lightly '{acc_l[1]}'; ours '{acc_o[1]}'")
    print("loss: mean of the last epoch; PSS: peak over the process and its workers; "
          "train s: the training loop only (ours: sum of the trainer's epoch times); "
          "wall s: the whole subprocess, start-up and data loading included")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("setup", help="create .cache/bench/lightly-venv (idempotent)")
    for name in ("speed", "knn"):
        s = sub.add_parser(name)
        s.add_argument("--data", default=DEFAULT_DATA, help="folder with train/ and test/")
        s.add_argument("--batch", type=int, default=128)
        s.add_argument("--threads", type=int, default=2)
        s.add_argument("--lightly-proj", type=int, choices=(2, 3), default=2,
                       help="2: CIFAR projector from lightly's ProjectionHead blocks; "
                            "3: lightly's SimSiamProjectionHead as published")
        if name == "speed":
            s.add_argument("--runs", type=int, default=5)
            s.add_argument("--steps", type=int, default=30)
            s.add_argument("--warmup", type=int, default=3)
            s.add_argument("--fp32-runs", type=int, default=1,
                           help="runs of ours with amp=fp32, channels_last=false")
            s.add_argument("--compile-runs", type=int, default=1,
                           help="runs of ours with train.compile=true (compile not timed)")
            s.add_argument("--per-class", type=int, default=1000,
                           help="images per class in the training set (demo preset: 1000)")
        else:
            s.add_argument("--epochs", type=int, default=3)
            s.add_argument("--seed", type=int, default=SEED, help="both sides' seed")
            s.add_argument("--amp", choices=("auto", "fp32"), default="auto",
                           help="our side: auto (bf16 + channels_last where the CPU has "
                           "bf16) or fp32 contiguous, as lightly's side runs")
            s.add_argument("--per-class", type=int, default=1000)
            s.add_argument("--workers", type=int, default=None,
                           help="lightly DataLoader workers (default: the fastest in the "
                                "last speed probe, else 0)")
    args = p.parse_args(argv)
    if args.cmd == "setup":
        setup()
    elif args.cmd == "speed":
        speed(args)
    else:
        knn(args)


if __name__ == "__main__":
    main()
