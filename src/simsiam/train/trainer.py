"""The pretraining loop: data -> views -> method -> SGD, with monitoring and checkpoints.

A thin harness: the method (see ``simsiam.methods``) owns its networks and loss; this
module owns the optimizer and schedule (SIMSIAM.md section 3), the epoch loop, the kNN
monitor (section 4), metrics, atomic checkpoints, resume and the backbone export.

Run directory layout: ``config.yaml``, ``metrics.jsonl``, ``tb/``, ``checkpoints/last.pt``
(and ``epoch_NNNN.pt`` with ``train.save_every``), ``backbone.safetensors`` (at the end).

Faults: a NaN/inf loss stops the run before anything is saved after it; SIGINT/SIGTERM
save a checkpoint at the next step boundary and stop; checkpoints are written atomically.

Data parallelism: under ``torchrun`` (see :mod:`simsiam.distributed`) the method is
wrapped in DistributedDataParallel with every BatchNorm synchronised; ``train.batch_size``
is the global batch, split evenly over the processes, so the steps per epoch, the lr
(scaled by the global batch) and the schedule (in global steps) are those of one process
with the whole batch. Rank 0 alone logs, writes checkpoints and exports; every process
resumes from the same checkpoint; a stop signal on any process stops all of them at the
same step.
"""

from __future__ import annotations

import shutil
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from omegaconf import OmegaConf
from tqdm import tqdm

from simsiam.config import Config, config_to_dict, config_to_yaml
from simsiam.data.dataset import load_splits
from simsiam.data.loaders import make_loader
from simsiam.distributed import (
    DistContext,
    all_reduce_sum,
    batch_plan,
    check_global_batch,
    convert_sync_batchnorm,
    setup_distributed,
)
from simsiam.distributed.context import launcher
from simsiam.distributed.ddp import wrap_ddp
from simsiam.errors import CollapseError, ConfigError
from simsiam.eval.collapse import CollapseGuard, healthy_std
from simsiam.eval.linear import LinearClassifier
from simsiam.eval.monitor import monitor_record
from simsiam.methods import build_method
from simsiam.models.backbones import backbone_state_dict, feature_dim
from simsiam.train.checkpoint import (
    atomic_write,
    load_checkpoint,
    restore_rng_state,
    rng_state,
    save_backbone,
    save_checkpoint,
)
from simsiam.train.guards import (
    nonfinite_loss_error,
    nonfinite_parameters,
    nonfinite_parameters_error,
)
from simsiam.train.interrupt import RunInterrupted, StopSignals
from simsiam.train.logger import MetricsLogger, NullLogger
from simsiam.train.resources import peak_memory_mib
from simsiam.train.run_dir import (
    check_run_dir,
    clear_run_dir,
    resume_config,
    truncate_metrics,
)
from simsiam.train.schedule import cosine_lr, predictor_lr
from simsiam.train.step import bf16_for_run, train_step


@dataclass
class RunResult:
    """What a finished run measured. kNN accuracies in percent; epoch 0 = before training."""

    run_dir: Path
    epochs: int
    steps: int
    knn: dict[int, float] = field(default_factory=dict)
    probe: dict[int, float] = field(default_factory=dict)  # online probe top-1 on held-out
    epoch_loss: dict[int, float] = field(default_factory=dict)
    test_images: int = 0
    backbone_path: Path | None = None


def _epoch_sums(base_seen: int, seen: int, loss_sum: torch.Tensor, probe_hits: torch.Tensor,
                world: int) -> tuple[int, torch.Tensor, torch.Tensor]:
    """Global sums over the epoch so far: images, the loss (each step's loss averaged over
    the processes, summed over steps) and online-probe hits. ``base_seen`` counts the
    images before a mid-epoch resume (whose loss sum every process continues and whose
    probe hits rank 0 continues); ``seen`` this process's images since."""
    if world == 1:
        return base_seen + seen, loss_sum, probe_hits
    sums = all_reduce_sum(torch.stack([loss_sum.float(), probe_hits.float()]))
    return base_seen + seen * world, sums[0] / world, sums[1]


def _interrupted(logger: MetricsLogger | NullLogger, signum: int, epoch: int, batch: int,
                 per_epoch: int, step: int, out: Path) -> None:
    name = signal.Signals(signum).name
    logger.log({"kind": "interrupted", "signal": name, "step": step, "epoch": epoch,
                "batch_in_epoch": batch})
    where = f"epoch {epoch + 1}, batch {batch}/{per_epoch}" if batch else f"end of epoch {epoch}"
    raise RunInterrupted(signum, f"stopped by {name} at step {step} ({where}); checkpoint saved "
                         f"to {out / 'checkpoints' / 'last.pt'}. Continue with: {launcher()} "
                         f"pretrain --config {out / 'config.yaml'} --out {out} --resume")


def pretrain(cfg: Config, resume: bool = False, overwrite: bool = False,
             progress: bool = True, stop_after_epoch: int | None = None) -> RunResult:
    """Pretrain ``cfg.method`` on ``cfg.data`` and return what was measured.

    ``stop_after_epoch`` ends the run early after that epoch's checkpoint, as an
    interruption would (no export); ``resume=True`` then continues the same schedule.
    Resuming restores the model, optimizer, step, epoch, position inside the epoch, the
    epoch's running sums, RNG states and the online probe; the lr schedule is a function
    of the step, so a resumed run computes what an uninterrupted one would.

    Raises:
        ConfigError / DataError: bad settings, output directory or data, before training.
        FloatingPointError: the loss became NaN or infinite; names the first such step;
            nothing is saved after it, so the last checkpoint is the last good one.
        RunInterrupted: SIGINT or SIGTERM arrived; a checkpoint of the current step was
            saved first (see :mod:`simsiam.train.interrupt`).
        CollapseError: ``eval.stop_on_collapse`` and the collapse guard fired.
    """
    out = Path(cfg.train.out)
    if stop_after_epoch is not None and not 1 <= stop_after_epoch <= cfg.train.epochs:
        raise ConfigError(f"--stop-after-epoch {stop_after_epoch}: use an epoch from 1 to "
                          f"train.epochs = {cfg.train.epochs}")
    ctx = setup_distributed(cfg.train.device)
    try:
        check_global_batch(cfg.train.batch_size, ctx.world_size)  # before any work
        check_run_dir(out, resume, overwrite)
        ctx.barrier()  # every process has checked before rank 0 writes anything
        with StopSignals() as stop:
            return _pretrain(cfg, out, resume, overwrite, progress and ctx.is_main,
                             stop_after_epoch, stop, ctx)
    finally:
        ctx.close()


def _pretrain(cfg: Config, out: Path, resume: bool, overwrite: bool, progress: bool,
              stop_after_epoch: int | None, stop: StopSignals, ctx: DistContext) -> RunResult:
    if resume:
        cfg = resume_config(cfg, out)
    device = ctx.device
    train, test = ctx.main_first(lambda: load_splits(cfg.data, cfg.train.seed,
                                                     progress=progress))
    plan = batch_plan(len(train), cfg.train.batch_size, ctx.world_size, cfg.optim.base_lr)
    bs, epochs = plan.global_batch, cfg.train.epochs
    steps_per_epoch = plan.steps_per_epoch
    total_steps = steps_per_epoch * epochs

    torch.manual_seed(cfg.train.seed)
    model = build_method(cfg.method, cfg.model, cfg.data.image_size, steps_per_epoch)
    if ctx.distributed:  # never for a single process
        model = convert_sync_batchnorm(model, device.type)
    model = model.to(device)
    memory_format = torch.channels_last if cfg.train.channels_last else torch.preserve_format
    model = model.to(memory_format=memory_format)
    peak_lr = plan.peak_lr
    # fused: one kernel for the whole update (CPU and CUDA), the same SGD rule.
    optimizer = torch.optim.SGD(model.param_groups(), lr=peak_lr, momentum=cfg.optim.momentum,
                                weight_decay=cfg.optim.weight_decay, fused=True)
    # Online probe (labels for evaluation only): features are detached, its optimizer owns
    # only its own parameters, so no gradient reaches the encoder.
    probe = probe_opt = None
    labels = torch.as_tensor(train.labels, device=device)
    if cfg.eval.online_probe:
        probe = LinearClassifier(feature_dim(cfg.model.backbone), len(train.classes)).to(device)
        if ctx.distributed:
            probe = convert_sync_batchnorm(probe, device.type)
        probe_opt = torch.optim.SGD(probe.parameters(), lr=cfg.eval.probe_lr, momentum=0.9)
    result = RunResult(out, 0, 0, test_images=len(test) if test is not None else 0)
    start_epoch, step, start_batch, partial = 0, 0, 0, None
    ckpt_path = out / "checkpoints" / "last.pt"
    if resume:
        state = load_checkpoint(ckpt_path)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start_epoch, step = int(state["epoch"]), int(state["step"])
        start_batch, partial = int(state.get("batch_in_epoch", 0)), state.get("partial")
        if start_epoch >= epochs:
            raise ConfigError(f"--resume: the run in '{out}' already finished all {epochs} "
                              "epochs; nothing to resume. To train longer, start a new run "
                              "with another --out and more --epochs")
        restore_rng_state(state, device)
        if probe is not None and "probe" in state:
            probe.load_state_dict(state["probe"])
            probe_opt.load_state_dict(state["probe_optimizer"])
        result.knn = {int(k): v for k, v in state.get("knn", {}).items()}
        result.epoch_loss = {int(k): v for k, v in state.get("epoch_loss", {}).items()}
        result.probe = {int(k): v for k, v in state.get("probe_top1", {}).items()}
        if ctx.is_main:
            truncate_metrics(out, step)
    elif ctx.is_main:  # everything is checked and built: only now replace a previous run
        clear_run_dir(out)
        text = config_to_yaml(cfg)
        atomic_write(out / "config.yaml", lambda tmp: tmp.write_text(text, encoding="utf-8"))
    ctx.barrier()
    # Loaded state first, then DDP (which broadcasts rank 0's weights to all processes).
    step_module = wrap_ddp(model, ctx) if ctx.distributed else model
    probe_step = wrap_ddp(probe, ctx) if ctx.distributed and probe is not None else probe
    step_model = torch.compile(step_module) if cfg.train.compile else step_module
    last_saved = (start_epoch, step) if resume else None
    logger = (MetricsLogger(out, purge_step=step + 1 if resume else None) if ctx.is_main
              else NullLogger())
    use_amp = bf16_for_run(cfg, device)
    logger.log({"kind": "setup", "step": step, "world_size": ctx.world_size,
                "global_batch": bs, "per_device_batch": plan.per_device,
                "steps_per_epoch": steps_per_epoch, "peak_lr": peak_lr,
                "backend": ctx.backend or "none", "sync_bn": ctx.distributed,
                "device": str(device), "bf16": use_amp})
    loader = make_loader(train, cfg, device, ctx.rank, ctx.world_size)

    def knn_monitor(epoch: int) -> None:
        if test is None:
            return
        record = monitor_record(model.backbone, train, test, cfg, device,
                                probe if epoch > 0 else None)
        result.knn[epoch] = record["knn_top1"]
        text = f"epoch {epoch}: knn_top1 {record['knn_top1']:.2f}%"
        if "online_probe_top1" in record:
            result.probe[epoch] = record["online_probe_top1"]
            text += f", online probe top1 {record['online_probe_top1']:.2f}%"
        logger.log({"kind": "knn", "step": step, "epoch": epoch} | record)
        if progress:
            tqdm.write(f"{text} ({len(test)} held-out images)")

    # Non-finite losses are counted on the device (no host sync per step) and checked at
    # every log step and before every checkpoint, so a NaN never reaches a checkpoint.
    nonfinite = torch.zeros((), dtype=torch.long, device=device)
    clean_steps = torch.zeros((), dtype=torch.long, device=device)  # steps before the first
    first_step = step

    def kept() -> str:
        return (f"the last good checkpoint, {ckpt_path} (epoch {last_saved[0]}, step "
                f"{last_saved[1]}), is kept" if last_saved else "no checkpoint was written yet")

    def check_finite(epoch: int) -> None:
        if all_reduce_sum(nonfinite).item() == 0:  # any process's NaN stops all of them
            return
        bad_step = first_step + int(clean_steps.item()) + 1
        logger.log({"kind": "nonfinite", "step": bad_step, "epoch": epoch})
        raise nonfinite_loss_error(bad_step, epoch, kept())

    def check_parameters(epoch: int) -> None:
        bad = nonfinite_parameters(model)
        if bad:
            logger.log({"kind": "nonfinite", "step": step, "epoch": epoch, "parameters": bad})
            raise nonfinite_parameters_error(bad, step, epoch, kept())

    def save(epoch_done: int, batch_in_epoch: int, partial_sums: dict | None) -> None:
        nonlocal last_saved
        check_parameters(epoch_done - 1 if batch_in_epoch == 0 else epoch_done)
        last_saved = (epoch_done, step)
        if not ctx.is_main:  # rank 0 writes; the others wait until the file is complete
            ctx.barrier()
            return
        state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                 "epoch": epoch_done, "step": step, "batch_in_epoch": batch_in_epoch,
                 "config": config_to_dict(cfg), **rng_state(device),
                 "knn": {str(k): v for k, v in result.knn.items()},
                 "epoch_loss": {str(k): v for k, v in result.epoch_loss.items()},
                 "probe_top1": {str(k): v for k, v in result.probe.items()}}
        if partial_sums is not None:
            state["partial"] = partial_sums
        if probe is not None:
            state |= {"probe": probe.state_dict(), "probe_optimizer": probe_opt.state_dict()}
        save_checkpoint(state, ckpt_path)
        ctx.barrier()

    if cfg.eval.knn_at_start and start_epoch == 0 and step == 0:
        knn_monitor(0)
    healthy = healthy_std(cfg.model.dim)
    guard = CollapseGuard(cfg.model.dim, cfg.eval.collapse_ratio, cfg.eval.collapse_patience)
    stop.defer()  # from here a signal saves a checkpoint at the next step boundary
    try:
        for epoch in range(start_epoch, epochs):
            first = start_batch if epoch == start_epoch else 0  # > 0: resuming mid-epoch
            loader.sampler.set_epoch(epoch, start=first * bs)
            model.train()
            # This process's sums (see _epoch_sums for the global ones).
            t0, seen, base_seen = time.perf_counter(), 0, 0
            loss_sum = torch.zeros((), device=device)
            probe_hits = torch.zeros((), device=device)
            if first and partial is not None:
                base_seen = int(partial["seen"])
                loss_sum = partial["loss_sum"].to(device)
                if ctx.is_main:
                    probe_hits = partial["probe_hits"].to(device)

            bar = tqdm(total=steps_per_epoch, initial=first, desc=f"epoch {epoch + 1}/{epochs}",
                       unit="step", disable=not progress, dynamic_ncols=True, mininterval=1.0)
            for i, (*views, idx) in enumerate(loader, start=first):
                lr = cosine_lr(peak_lr, epoch, i, steps_per_epoch, epochs,
                               cfg.optim.warmup_epochs, cfg.optim.schedule == "step")
                for group in optimizer.param_groups:  # fix_pred_lr: SimSiam's Table 1c
                    group["lr"] = (predictor_lr(peak_lr, lr, cfg.optim.fix_pred_lr)
                                   if group.get("name") == "predictor"
                                   and cfg.method == "simsiam" else lr)
                views = [v.to(device, non_blocking=True, memory_format=memory_format)
                         for v in views]
                loss, metrics = train_step(step_model, optimizer, views, use_amp)
                if probe is not None:
                    y = labels[idx.to(device)]
                    logits = probe_step(metrics["features"].float())
                    probe_loss = torch.nn.functional.cross_entropy(logits, y)
                    probe_opt.zero_grad(set_to_none=True)
                    probe_loss.backward()
                    probe_opt.step()
                    probe_hits += (logits.argmax(1) == y).sum()
                model.on_step_end(step, total_steps)
                step += 1
                seen += views[0].shape[0]
                loss_sum += loss
                nonfinite += ~torch.isfinite(loss)
                clean_steps += nonfinite == 0
                bar.update(1)
                if step % cfg.train.log_every == 0 or i == steps_per_epoch - 1:
                    check_finite(epoch)
                    # Means over the processes, so every process takes the same decisions.
                    shown = all_reduce_sum(torch.stack(
                        [loss.float(), metrics["collapse_std"].float()])) / ctx.world_size
                    record = {"kind": "step", "step": step, "epoch": epoch,
                              "loss": shown[0].item(),
                              "lr": lr, "lr_predictor": next(
                                  (g["lr"] for g in optimizer.param_groups
                                   if g.get("name") == "predictor"), lr),
                              "collapse_std": shown[1].item(),
                              "collapse_healthy": healthy,
                              "pairs_per_s": seen * ctx.world_size / (time.perf_counter() - t0)}
                    logger.log(record)
                    bar.set_postfix(loss=f"{record['loss']:.3f}", lr=f"{lr:.4f}",
                                    std=f"{record['collapse_std']:.4f}/{healthy:.4f}")
                    if guard.update(step, record["collapse_std"]):
                        msg = guard.message(step)
                        logger.log({"kind": "collapse", "step": step, "epoch": epoch,
                                    "collapse_std": guard.last, "threshold": guard.threshold,
                                    "since_step": guard.since})
                        tqdm.write(f"WARNING {msg}", file=sys.stderr)
                        if cfg.eval.stop_on_collapse:
                            kept = (f"the last checkpoint ({ckpt_path}, epoch {last_saved[0]})"
                                    " is kept" if last_saved else "no checkpoint was written yet")
                            raise CollapseError(f"{msg}. Stopped (--stop-on-collapse); {kept}")
                stopping = ctx.any_flag(stop.signum is not None)  # all processes stop together
                if stopping and i + 1 < steps_per_epoch:
                    check_finite(epoch)
                    seen_g, loss_g, hits_g = _epoch_sums(base_seen, seen, loss_sum, probe_hits,
                                                         ctx.world_size)
                    save(epoch, i + 1, {"seen": seen_g, "loss_sum": loss_g.cpu(),
                                        "probe_hits": hits_g.cpu()})
                    _interrupted(logger, stop.signum or signal.SIGTERM, epoch, i + 1,
                                 steps_per_epoch, step, out)
            bar.close()
            check_finite(epoch)
            seen_g, loss_g, hits_g = _epoch_sums(base_seen, seen, loss_sum, probe_hits,
                                                 ctx.world_size)
            mean_loss = (loss_g / steps_per_epoch).item()
            result.epoch_loss[epoch + 1] = mean_loss
            epoch_record = {"kind": "epoch", "step": step, "epoch": epoch + 1, "loss": mean_loss,
                            "seconds": time.perf_counter() - t0,
                            "peak_mem_mib": peak_memory_mib(device)}
            if probe is not None:  # on the augmented views of the training images
                epoch_record["online_probe_train_top1"] = 100.0 * hits_g.item() / seen_g
            logger.log(epoch_record)
            last = epoch + 1 == epochs
            due = cfg.eval.knn_every and ((epoch + 1) % cfg.eval.knn_every == 0 or last)
            stopping = ctx.any_flag(stop.signum is not None)
            if due and (not stopping or last):  # stopping: save first, no kNN
                knn_monitor(epoch + 1)
            save(epoch + 1, 0, None)
            if cfg.train.save_every and (epoch + 1) % cfg.train.save_every == 0 and ctx.is_main:
                keep = ckpt_path.with_name(f"epoch_{epoch + 1:04d}.pt")
                atomic_write(keep, lambda tmp: shutil.copyfile(ckpt_path, tmp))
            if stopping and not last:
                _interrupted(logger, stop.signum or signal.SIGTERM, epoch + 1, 0,
                             steps_per_epoch, step, out)
            if stop_after_epoch is not None and epoch + 1 >= stop_after_epoch and not last:
                result.epochs, result.steps = epoch + 1, step
                return result
    finally:
        logger.close()
    result.epochs, result.steps = epochs, step
    result.backbone_path = out / "backbone.safetensors"
    if ctx.is_main:
        save_backbone(backbone_state_dict(model.backbone), result.backbone_path,
                      {"format": "torchvision", "arch": cfg.model.backbone,
                       "stem": cfg.model.stem, "image_size": str(cfg.data.image_size),
                       "normalize": cfg.augment.normalize, "seed": str(cfg.train.seed),
                       "config": OmegaConf.to_yaml(OmegaConf.structured(cfg))})
    ctx.barrier()
    return result
