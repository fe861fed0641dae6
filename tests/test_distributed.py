"""Data parallelism: global-batch maths, the sharded sampler, SyncBatchNorm, and real
two-process gloo runs on the loopback interface compared with one process."""

from __future__ import annotations

import os
import socket
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from simsiam.config import ModelConfig, load_config
from simsiam.data.dataset import EpochShuffleSampler
from simsiam.data.device_loader import BatchedViewLoader
from simsiam.distributed import (
    SyncBatchNorm,
    batch_plan,
    check_global_batch,
    convert_sync_batchnorm,
    setup_distributed,
    shard_bounds,
)
from simsiam.errors import ConfigError, DataError
from simsiam.eval.knn import extract_features, knn_top1
from simsiam.methods import (
    BYOLConfig,
    CLIPConfig,
    MoCoV2Config,
    SimCLRConfig,
    SimSiamConfig,
    SwAVConfig,
    build_method,
)
from simsiam.models.backbones import build_backbone
from simsiam.train.step import train_step

# swav+queue: an 8-row feature queue, filled by step 1's global batch, used at step 2
# clip: image and caption features gathered with gradient for the global-batch InfoNCE
METHODS = ("simsiam", "simclr", "mocov2", "byol", "swav", "swav+queue", "clip")
TIMEOUT_S = 240  # the whole two-process run; each collective also times out after 60 s


# ---------------------------------------------------------------- step maths, no processes

def test_step_maths_1000_images_32_per_device_on_4_processes():
    plan = batch_plan(1000, global_batch=128, world_size=4, base_lr=0.05)
    assert (plan.per_device, plan.steps_per_epoch) == (32, 7)
    assert plan.peak_lr == pytest.approx(0.05 * 128 / 256)
    samplers = [EpochShuffleSampler(1000, seed=3, batch_size=128, rank=r, world_size=4)
                for r in range(4)]
    single = [i for _, i in EpochShuffleSampler(1000, seed=3)]
    shards = [[i for _, i in s] for s in samplers]
    assert [len(s) for s in samplers] == [7 * 32] * 4 == [len(x) for x in shards]
    for step in range(7):  # the processes' slices of step b make the single-process batch b
        glued = [i for s in shards for i in s[step * 32:(step + 1) * 32]]
        assert glued == single[step * 128:(step + 1) * 128]
    assert sorted(i for s in shards for i in s) == sorted(single[:896])  # each image once
    images = np.zeros((1000, 4, 4, 3), np.uint8)
    loaders = [BatchedViewLoader(images, None, 32, 3, torch.device("cpu"), rank=r, world_size=4)
               for r in range(4)]
    assert [len(x) for x in loaders] == [7] * 4


def test_resumed_shard_starts_at_the_next_global_batch():
    s = EpochShuffleSampler(1000, seed=3, batch_size=128, rank=1, world_size=4)
    s.set_epoch(2)
    full = [i for _, i in s]
    s.set_epoch(2, start=3 * 128)  # three global steps done
    assert [i for _, i in s] == full[3 * 32:] and len(s) == 4 * 32
    with pytest.raises(ValueError, match="multiple of the global batch 128"):
        s.set_epoch(2, start=100)


def test_a_global_batch_the_world_size_does_not_divide_is_refused_naming_both():
    with pytest.raises(ConfigError, match=r"train.batch_size = 100 .* world size 8: use 96 or 104"):
        batch_plan(1000, 100, 8, 0.05)
    with pytest.raises(DataError, match="fewer than train.batch_size = 512"):
        batch_plan(500, 512, 2, 0.05)
    with pytest.raises(ConfigError, match="1 image per process; BatchNorm needs at least 2 "
                       "per process: use 4 or more"):
        check_global_batch(2, 2)
    with pytest.raises(ValueError, match="rank 4 is outside"):
        EpochShuffleSampler(10, 0, 8, rank=4, world_size=4)


def test_shard_bounds_cover_every_row_once():
    for n, w in [(101, 2), (37, 2), (2, 3), (10, 4), (0, 2)]:
        bounds = [shard_bounds(n, r, w) for r in range(w)]
        assert [i for lo, hi in bounds for i in range(lo, hi)] == list(range(n))


def test_convert_sync_batchnorm_replaces_every_batchnorm_and_keeps_the_state():
    torch.manual_seed(0)
    model = build_method("simsiam", ModelConfig(), 32)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    n_bn = sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    assert n_bn == 57  # ResNet-50: 53; projector: 3; predictor: 1 (the hidden layer)
    model = convert_sync_batchnorm(model)
    assert sum(isinstance(m, SyncBatchNorm) for m in model.modules()) == n_bn
    assert not any(type(m) in (nn.BatchNorm1d, nn.BatchNorm2d) for m in model.modules())
    after = model.state_dict()
    assert after.keys() == before.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    # no process group: SyncBatchNorm is plain BatchNorm
    bn, sync = nn.BatchNorm1d(5), convert_sync_batchnorm(nn.BatchNorm1d(5))
    x = torch.randn(8, 5)
    assert torch.equal(bn(x), sync(x)) and torch.equal(bn.running_var, sync.running_var)


def test_a_single_process_creates_no_process_group_and_no_syncbatchnorm(cifar_dir, tmp_path,
                                                                        monkeypatch):
    import simsiam.train.trainer as trainer

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    ctx = setup_distributed("cpu")
    assert not ctx.distributed and ctx.backend is None and not dist.is_initialized()
    built = []

    def capture(*args, **kw):
        built.append(build_method(*args, **kw))
        return built[-1]

    monkeypatch.setattr(trainer, "build_method", capture)
    cfg = load_config(None, {
        "data.source": str(cifar_dir), "data.image_size": 16, "data.per_class": 4,
        "data.test_per_class": 2, "model.backbone": "resnet18", "model.simsiam.dim": 64,
        "model.simsiam.proj_hidden_dim": 64, "model.simsiam.pred_hidden_dim": 16,
        "train.batch_size": 20,
        "train.epochs": 1, "train.out": str(tmp_path / "run"), "train.device": "cpu",
        "train.amp": "fp32", "eval.knn_every": 0})
    res = trainer.pretrain(cfg, progress=False)
    assert res.steps == 2 and not dist.is_initialized()
    assert not any(isinstance(m, nn.SyncBatchNorm) for m in built[0].modules())
    assert sum(isinstance(m, nn.BatchNorm2d) for m in built[0].modules()) == 20


# ------------------------------------------------------------ two processes on the loopback

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank: int, world: int, port: int, task: str, out: str) -> None:
    """Child process: join a gloo group on 127.0.0.1, run ``task``, save its result."""
    torch.set_num_threads(1)
    if any(name == "lo" for _, name in socket.if_nameindex()):
        os.environ["GLOO_SOCKET_IFNAME"] = "lo"  # loopback only
    timeout = timedelta(seconds=WAIT_S if task == "main_first" else 60)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world, timeout=timeout)
    try:
        result = TASKS[task](rank, world)
        torch.save(result, Path(out) / f"{task}-{rank}.pt")
    finally:
        dist.destroy_process_group()


def _spawn(task: str, tmp_path: Path, world: int = 2) -> list:
    """Run ``task`` in ``world`` fresh processes; fail (killing them) after TIMEOUT_S."""
    ctx = mp.start_processes(_rank_main, args=(world, _free_port(), task, str(tmp_path)),
                             nprocs=world, join=False, start_method="spawn")
    deadline = time.monotonic() + TIMEOUT_S
    while not ctx.join(timeout=5):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail(f"{task}: {world} processes did not finish within {TIMEOUT_S} s")
    return [torch.load(tmp_path / f"{task}-{r}.pt", weights_only=False) for r in range(world)]


GLOBAL_BATCH, STEPS, LR = 8, 2, 0.2


def _setup(method: str, sync_bn: bool):
    torch.manual_seed(0)
    name, _, queue = method.partition("+")
    heads = {"dim": 256, "hidden_dim": 256}
    cfg = ModelConfig(backbone="resnet18", stem="cifar",
                      simsiam=SimSiamConfig(dim=256, proj_hidden_dim=256, pred_hidden_dim=64),
                      simclr=SimCLRConfig(**heads),
                      # under torchrun MoCo's BN is synchronised: its one-device shuffle BN
                      # (split BN emulating processes) is what DDP replaces, so it is off here
                      mocov2=MoCoV2Config(**heads, shuffle_bn=False),
                      byol=BYOLConfig(**heads),
                      swav=SwAVConfig(**heads, freeze_prototypes_epochs=0,  # learn at once
                                      queue_size=GLOBAL_BATCH if queue else 0,
                                      queue_start_epochs=0),
                      clip=CLIPConfig(embed_dim=32, context_length=8, text_width=32,
                                      text_heads=2, text_layers=1))
    model = build_method(name, cfg, image_size=32, steps_per_epoch=10)
    if sync_bn:
        model = convert_sync_batchnorm(model)
    opt = torch.optim.SGD(model.param_groups(), lr=LR, momentum=0.9, weight_decay=5e-4,
                          fused=True)
    g = torch.Generator().manual_seed(1)
    if name == "clip":  # images and token ids (start, 6 random tokens, end) per pair
        batches = [[torch.randn(GLOBAL_BATCH, 3, 32, 32, generator=g),
                    torch.cat([torch.full((GLOBAL_BATCH, 1), 49406),
                               torch.randint(1, 49000, (GLOBAL_BATCH, 6), generator=g),
                               torch.full((GLOBAL_BATCH, 1), 49407)], dim=1)]
                   for _ in range(STEPS)]
    else:
        batches = [[torch.randn(GLOBAL_BATCH, 3, 32, 32, generator=g) for _ in range(2)]
                   for _ in range(STEPS)]
    return model, opt, batches


def _train(model, step_model, opt, batches, lo: int, hi: int) -> dict:
    losses = []
    for step, views in enumerate(batches):
        loss, _ = train_step(step_model, opt, [v[lo:hi] for v in views], bf16=False)
        model.on_step_end(step, 10)
        losses.append(loss.item())
    return {"losses": losses, "state": {k: v.detach().clone() for k, v in
                                        model.state_dict().items()}}


def _ddp_steps(rank: int, world: int, sync_bn: bool = True,
               methods: tuple[str, ...] = METHODS) -> dict:
    from torch.nn.parallel import DistributedDataParallel

    per = GLOBAL_BATCH // world
    out = {}
    for method in methods:
        model, opt, batches = _setup(method, sync_bn)
        ddp = DistributedDataParallel(model, forward_sync_buffers=False)
        out[method] = _train(model, ddp, opt, batches, rank * per, (rank + 1) * per)
    return out


def _ddp_steps_plain_bn(rank: int, world: int) -> dict:
    return _ddp_steps(rank, world, sync_bn=False, methods=("simsiam",))


KNN_BANK, KNN_QUERIES = 101, 37  # neither divisible by 2


def _knn_data():
    rng = np.random.default_rng(0)
    bank = rng.integers(0, 256, (KNN_BANK, 32, 32, 3), dtype=np.uint8)
    queries = rng.integers(0, 256, (KNN_QUERIES, 32, 32, 3), dtype=np.uint8)
    bank_labels = torch.as_tensor(rng.integers(0, 4, KNN_BANK))
    query_labels = torch.as_tensor(rng.integers(0, 4, KNN_QUERIES))
    torch.manual_seed(0)
    backbone = build_backbone("resnet18", "cifar")
    return backbone, bank, queries, bank_labels, query_labels


def _knn(rank: int, world: int) -> dict:
    backbone, bank, queries, bank_labels, query_labels = _knn_data()
    kw = dict(image_size=32, normalize="cifar10", batch_size=16)
    fb = extract_features(backbone, bank, **kw)
    fq = extract_features(backbone, queries, **kw)
    one = extract_features(backbone, bank[:1], **kw)  # rank 1's shard is empty
    return {"bank": fb, "queries": fq, "one": one,
            "top1": knn_top1(fb, bank_labels, fq, query_labels, 4, k=10, temperature=0.1)}


WAIT_S = 3  # the collectives' timeout in the main_first task; rank 0 works for longer


def _main_first(rank: int, world: int) -> dict:
    """Rank 0 decodes a cache for longer than the group's timeout; the others wait."""
    ctx = setup_distributed("cpu")
    got = ctx.main_first(lambda: time.sleep(2 * WAIT_S) if ctx.is_main else None)
    timed_out = False
    try:  # the control: a plain barrier with rank 0 late times out
        if ctx.is_main:
            time.sleep(2 * WAIT_S)
        dist.barrier()
    except RuntimeError:
        timed_out = True
    return {"got": got, "plain_barrier_timed_out": timed_out}


TASKS = {"ddp_steps": _ddp_steps, "ddp_steps_plain_bn": _ddp_steps_plain_bn, "knn": _knn,
         "main_first": _main_first}


@pytest.fixture(scope="module")
def single_process_steps() -> dict:
    out = {}
    for method in METHODS:
        model, opt, batches = _setup(method, sync_bn=False)
        out[method] = _train(model, model, opt, batches, 0, GLOBAL_BATCH)
    return out


@pytest.mark.slow
def test_two_process_ddp_with_syncbn_equals_one_process_on_the_global_batch(
        tmp_path, single_process_steps):
    ranks = _spawn("ddp_steps", tmp_path)
    for method in METHODS:
        ref = single_process_steps[method]
        for r in ranks:  # every process holds the same model
            assert r[method]["state"].keys() == ref["state"].keys()
        for step in range(STEPS):  # the mean of the processes' losses is the global loss
            mean = sum(r[method]["losses"][step] for r in ranks) / len(ranks)
            assert mean == pytest.approx(ref["losses"][step], abs=1e-5), (method, step)
        for key, want in ref["state"].items():
            if not want.is_floating_point():
                assert all(torch.equal(r[method]["state"][key], want) for r in ranks), key
                continue
            for r in ranks:
                diff = (r[method]["state"][key] - want).abs().max().item()
                assert diff <= 1e-5, (method, key, diff)
        start = _setup(method, sync_bn=False)[0].state_dict()
        moved = max((ref["state"][k] - v).abs().max().item() for k, v in start.items()
                    if v.is_floating_point())
        assert moved > 1e-3, (method, moved)  # the steps changed the weights by far more


@pytest.mark.slow
def test_without_syncbn_the_two_processes_differ_from_one(tmp_path, single_process_steps):
    """The control: plain BatchNorm takes per-process statistics, so it is not the same."""
    ranks = _spawn("ddp_steps_plain_bn", tmp_path)
    ref = single_process_steps["simsiam"]["state"]
    diff = max((ranks[0]["simsiam"]["state"][k] - v).abs().max().item()
               for k, v in ref.items() if v.is_floating_point())
    assert diff > 1e-3


@pytest.mark.slow
def test_distributed_knn_over_two_processes_equals_one_process_exactly(tmp_path):
    ranks = _spawn("knn", tmp_path)
    backbone, bank, queries, bank_labels, query_labels = _knn_data()
    kw = dict(image_size=32, normalize="cifar10", batch_size=16)
    fb = extract_features(backbone, bank, **kw)
    fq = extract_features(backbone, queries, **kw)
    top1 = knn_top1(fb, bank_labels, fq, query_labels, 4, k=10, temperature=0.1)
    for r in ranks:
        assert r["one"].shape == (1, fb.shape[1]) and torch.allclose(r["one"], fb[:1],
                                                                     atol=1e-5)
        assert r["bank"].shape == fb.shape and r["queries"].shape == fq.shape
        assert torch.allclose(r["bank"], fb, atol=1e-5) and torch.allclose(r["queries"], fq,
                                                                             atol=1e-5)
        assert r["top1"] == top1  # every query counted exactly once
    assert top1 == 100.0 * round(top1 * KNN_QUERIES / 100) / KNN_QUERIES


# ------------------------------------------------------------------- torchrun, end to end

def _launch(args: list[str], nproc: int | None, cwd: Path) -> str:
    """``python -m simsiam ARGS`` alone, or under ``torchrun --standalone`` (loopback)."""
    import subprocess
    import sys

    head = [sys.executable, "-m", "simsiam"] if nproc is None else [
        sys.executable, "-m", "torch.distributed.run", "--standalone",
        f"--nproc_per_node={nproc}", "-m", "simsiam"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("WORLD_SIZE", None)
    proc = subprocess.run(head + args, capture_output=True, text=True, timeout=TIMEOUT_S,
                          cwd=cwd, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


@pytest.mark.slow
def test_torchrun_two_processes_train_like_one_and_resume_exactly(cifar_dir, tmp_path):
    """The per-image path draws each image's views from its index, so one process with
    the global batch and two with half each see the same data: with SyncBatchNorm and
    DDP the losses and trained weights agree up to float rounding (measured: losses within
    4e-6, weights within 4.3e-6, BN running variances within 1e-4 relative after 10
    steps). A run stopped after epoch 1 and resumed under torchrun equals the
    uninterrupted torchrun run bit for bit."""
    from safetensors.torch import load_file

    from simsiam.train.logger import read_metrics

    def run(out: str, nproc: int | None, *extra: str) -> str:
        sets = ["data.test_per_class=4", "model.stem=cifar", "model.simsiam.dim=256",
                "model.simsiam.proj_hidden_dim=256", "model.simsiam.pred_hidden_dim=64",
                "optim.base_lr=0.05", "optim.warmup_epochs=0", "augment.backend=per_image",
                "train.amp=fp32", "train.log_every=1", "eval.knn_every=1",
                "eval.knn_at_start=false", "eval.knn_k=20"]
        args = ["pretrain", "--config", "demo-cpu", "--data", str(cifar_dir), "--per-class",
                "8", "--epochs", "2", "--batch-size", "16", "--device", "cpu", "--no-progress",
                "--out", str(tmp_path / out), *extra]
        for s in sets:
            args += ["--set", s]
        return _launch(args, nproc, tmp_path)

    run("one", None)
    printed = run("two", 2)
    assert printed.count("pretrain: 2 epochs, 10 steps") == 1  # rank 0 alone reports
    run("resumed", 2, "--stop-after-epoch", "1")
    run("resumed", 2, "--resume")

    one, two = read_metrics(tmp_path / "one"), read_metrics(tmp_path / "two")
    setup = [r for r in two if r["kind"] == "setup"]
    assert setup == [{"kind": "setup", "step": 0, "world_size": 2, "global_batch": 16,
                      "per_device_batch": 8, "steps_per_epoch": 5, "peak_lr": 0.05 * 16 / 256,
                      "backend": "gloo", "sync_bn": True, "device": "cpu",
                      "bf16": False, "images_found": 50000, "images_skipped": 0,
                      "images_held_out": 0, "images_capped": 49920, "train_images": 80,
                      "eval_images": 40, "labelled": True, "pipeline": "cache",
                      "view_kernels": None}]  # per_image views
    steps_one = [r for r in one if r["kind"] == "step"]
    steps_two = [r for r in two if r["kind"] == "step"]
    assert [r["step"] for r in steps_two] == list(range(1, 11))  # logged once, not per rank
    for a, b in zip(steps_one, steps_two, strict=True):
        assert b["lr"] == a["lr"] and b["loss"] == pytest.approx(a["loss"], abs=1e-5)
    w_one = load_file(str(tmp_path / "one" / "backbone.safetensors"))
    w_two = load_file(str(tmp_path / "two" / "backbone.safetensors"))
    w_res = load_file(str(tmp_path / "resumed" / "backbone.safetensors"))
    for key, want in w_one.items():  # 10 steps of float rounding apart, no more
        diff = (w_two[key].float() - want.float()).abs().max().item()
        if "running" in key:  # BN statistics (values up to ~3): relative
            assert diff <= 1e-3 * want.abs().max().item(), (key, diff)
        else:  # weights
            assert diff <= 2e-5, (key, diff)
    assert all(torch.equal(w_res[k], v) for k, v in w_two.items())
    knn_two = [r["knn_top1"] for r in two if r["kind"] == "eval"]
    assert knn_two == [r["knn_top1"] for r in read_metrics(tmp_path / "resumed")
                       if r["kind"] == "eval"]
    # Evaluation under torchrun: sharded extraction, the same kNN result as one process.
    knn = ["knn", "--checkpoint", str(tmp_path / "two" / "backbone.safetensors"), "--data",
           str(cifar_dir), "--per-class", "8", "--test-per-class", "4", "--device", "cpu",
           "--no-progress", "--k", "20"]
    alone, shared = _launch(knn, None, tmp_path), _launch(knn, 2, tmp_path)
    assert shared.count("knn: top1=") == 1 and shared.strip() == alone.strip()


@pytest.mark.slow
def test_the_other_processes_wait_for_rank_0_longer_than_the_collective_timeout(tmp_path):
    """Rank 0 decoding a large folder into the cache (main_first) outlasts the process
    group's timeout; the others wait on a group with a 24-hour one instead of failing."""
    ranks = _spawn("main_first", tmp_path)
    assert [r["got"] for r in ranks] == [None, None]
    assert ranks[1]["plain_barrier_timed_out"]  # what would have happened before
