"""The pretraining loop: data -> views -> method -> SGD, with monitoring and checkpoints.

A thin harness: the method (see ``simsiam.methods``) owns its networks and loss; this
module owns the optimizer and schedule (SIMSIAM.md section 3), the epoch loop, the kNN
monitor (section 4), metrics, atomic checkpoints, resume and the backbone export.

Run directory layout: ``config.yaml``, ``metrics.jsonl``, ``tb/``, ``checkpoints/last.pt``
(and ``epoch_NNNN.pt`` with ``train.save_every``), ``backbone.safetensors`` (at the end).

Faults: a NaN/inf loss stops the run before anything is saved after it; SIGINT/SIGTERM
save a checkpoint at the next step boundary and stop; checkpoints are written atomically.
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
from simsiam.errors import CollapseError, ConfigError, DataError
from simsiam.eval.collapse import CollapseGuard, healthy_std
from simsiam.eval.knn import extract_features, knn_top1
from simsiam.eval.linear import LinearClassifier, topk_accuracy
from simsiam.methods import build_method
from simsiam.models.backbones import backbone_state_dict, feature_dim
from simsiam.train.checkpoint import (
    atomic_write,
    load_checkpoint,
    save_backbone,
    save_checkpoint,
)
from simsiam.train.guards import (
    nonfinite_loss_error,
    nonfinite_parameters,
    nonfinite_parameters_error,
)
from simsiam.train.interrupt import RunInterrupted, StopSignals
from simsiam.train.logger import MetricsLogger
from simsiam.train.resources import peak_memory_mib
from simsiam.train.run_dir import (
    check_run_dir,
    clear_run_dir,
    resume_config,
    truncate_metrics,
)
from simsiam.train.schedule import cosine_lr, predictor_lr, scaled_lr


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


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda when available, else cpu. Raises ConfigError for cuda without one."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device = 'cuda' but no CUDA device is available; use "
                          "--device cpu or auto")
    return torch.device(name)


def use_bf16(amp: str, device: torch.device) -> bool:
    """Whether to run the forward pass under bfloat16 autocast (see ``train.amp``)."""
    if amp != "auto":
        return amp == "bf16"
    if device.type == "cuda":
        return True
    try:  # native bf16 on this CPU; emulated bf16 would be slower than float32
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except AttributeError:
        return False


def train_step(model, optimizer: torch.optim.Optimizer, views: list[torch.Tensor],
               bf16: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One SGD step of ``model`` (a method: ``views -> (loss, metrics)``).

    The forward pass runs under bfloat16 autocast when ``bf16``; the method computes its
    loss in float32. Returns the detached loss and the method's metrics (no host sync).
    """
    with torch.autocast(views[0].device.type, dtype=torch.bfloat16, enabled=bf16):
        loss, metrics = model(views)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach(), metrics


def _interrupted(logger: MetricsLogger, signum: int, epoch: int, batch: int, per_epoch: int,
                 step: int, out: Path) -> None:
    name = signal.Signals(signum).name
    logger.log({"kind": "interrupted", "signal": name, "step": step, "epoch": epoch,
                "batch_in_epoch": batch})
    where = f"epoch {epoch + 1}, batch {batch}/{per_epoch}" if batch else f"end of epoch {epoch}"
    raise RunInterrupted(signum, f"stopped by {name} at step {step} ({where}); checkpoint saved "
                         f"to {out / 'checkpoints' / 'last.pt'}. Continue with: simsiam "
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
    check_run_dir(out, resume, overwrite)
    with StopSignals() as stop:
        return _pretrain(cfg, out, resume, overwrite, progress, stop_after_epoch, stop)


def _pretrain(cfg: Config, out: Path, resume: bool, overwrite: bool, progress: bool,
              stop_after_epoch: int | None, stop: StopSignals) -> RunResult:
    if resume:
        cfg = resume_config(cfg, out)
    device = resolve_device(cfg.train.device)
    train, test = load_splits(cfg.data, cfg.train.seed, progress=progress)
    bs, epochs = cfg.train.batch_size, cfg.train.epochs
    if len(train) < bs:
        raise DataError(f"the training set has {len(train)} images, fewer than train.batch_size "
                        f"= {bs}, so no step would run; lower --batch-size or add images")
    steps_per_epoch = len(train) // bs
    total_steps = steps_per_epoch * epochs

    torch.manual_seed(cfg.train.seed)
    model = build_method(cfg.method, cfg.model, cfg.data.image_size, steps_per_epoch).to(device)
    memory_format = torch.channels_last if cfg.train.channels_last else torch.preserve_format
    model = model.to(memory_format=memory_format)
    peak_lr = scaled_lr(cfg.optim.base_lr, bs)
    # fused: one kernel for the whole update (CPU and CUDA), the same SGD rule.
    optimizer = torch.optim.SGD(model.param_groups(), lr=peak_lr, momentum=cfg.optim.momentum,
                                weight_decay=cfg.optim.weight_decay, fused=True)
    step_model = torch.compile(model) if cfg.train.compile else model
    # Online probe (labels for evaluation only): features are detached, its optimizer owns
    # only its own parameters, so no gradient reaches the encoder.
    probe = probe_opt = None
    labels = torch.as_tensor(train.labels, device=device)
    if cfg.eval.online_probe:
        probe = LinearClassifier(feature_dim(cfg.model.backbone), len(train.classes)).to(device)
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
        torch.set_rng_state(state["torch_rng"])
        if device.type == "cuda" and "cuda_rng" in state:
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        if probe is not None and "probe" in state:
            probe.load_state_dict(state["probe"])
            probe_opt.load_state_dict(state["probe_optimizer"])
        result.knn = {int(k): v for k, v in state.get("knn", {}).items()}
        result.epoch_loss = {int(k): v for k, v in state.get("epoch_loss", {}).items()}
        result.probe = {int(k): v for k, v in state.get("probe_top1", {}).items()}
        truncate_metrics(out, step)
    else:  # everything is checked and built: only now replace a previous run
        clear_run_dir(out)
        text = config_to_yaml(cfg)
        atomic_write(out / "config.yaml", lambda tmp: tmp.write_text(text, encoding="utf-8"))
    last_saved = (start_epoch, step) if resume else None
    logger = MetricsLogger(out, purge_step=step + 1 if resume else None)
    use_amp = use_bf16(cfg.train.amp, device)
    loader = make_loader(train, cfg, device)

    def knn_monitor(epoch: int) -> None:
        if test is None:
            return
        kw = dict(image_size=cfg.data.image_size, normalize=cfg.augment.normalize,
                  device=device, batch_size=cfg.eval.batch_size,
                  channels_last=cfg.train.channels_last, l2_normalize=False)
        bank = extract_features(model.backbone, train.images, **kw)
        queries = extract_features(model.backbone, test.images, **kw)
        test_labels = torch.as_tensor(test.labels, device=device)
        acc = knn_top1(bank, labels, queries, test_labels, len(train.classes), cfg.eval.knn_k,
                       cfg.eval.knn_t)
        result.knn[epoch] = acc
        record = {"kind": "knn", "step": step, "epoch": epoch, "knn_top1": acc,
                  "k": min(cfg.eval.knn_k, len(train)), "bank": len(train),
                  "queries": len(test)}
        text = f"epoch {epoch}: knn_top1 {acc:.2f}%"
        if probe is not None and epoch > 0:
            probe.eval()
            with torch.no_grad():
                record["online_probe_top1"] = topk_accuracy(probe(queries), test_labels, 1)
            probe.train()
            result.probe[epoch] = record["online_probe_top1"]
            text += f", online probe top1 {record['online_probe_top1']:.2f}%"
        logger.log(record)
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
        if nonfinite.item() == 0:
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
        state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                 "epoch": epoch_done, "step": step, "batch_in_epoch": batch_in_epoch,
                 "config": config_to_dict(cfg), "torch_rng": torch.get_rng_state(),
                 "knn": {str(k): v for k, v in result.knn.items()},
                 "epoch_loss": {str(k): v for k, v in result.epoch_loss.items()},
                 "probe_top1": {str(k): v for k, v in result.probe.items()}}
        if partial_sums is not None:
            state["partial"] = partial_sums
        if device.type == "cuda":
            state["cuda_rng"] = torch.cuda.get_rng_state_all()
        if probe is not None:
            state |= {"probe": probe.state_dict(), "probe_optimizer": probe_opt.state_dict()}
        save_checkpoint(state, ckpt_path)
        last_saved = (epoch_done, step)

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
            t0, seen = time.perf_counter(), 0
            loss_sum = torch.zeros((), device=device)
            probe_hits = torch.zeros((), device=device)
            if first and partial is not None:
                seen = int(partial["seen"])
                loss_sum = partial["loss_sum"].to(device)
                probe_hits = partial["probe_hits"].to(device)
            seen_at_start = seen
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
                    logits = probe(metrics["features"].float())
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
                    record = {"kind": "step", "step": step, "epoch": epoch, "loss": loss.item(),
                              "lr": lr, "lr_predictor": next(
                                  (g["lr"] for g in optimizer.param_groups
                                   if g.get("name") == "predictor"), lr),
                              "collapse_std": metrics["collapse_std"].item(),
                              "collapse_healthy": healthy,
                              "pairs_per_s": (seen - seen_at_start) / (time.perf_counter() - t0)}
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
                if stop.signum is not None and i + 1 < steps_per_epoch:
                    check_finite(epoch)
                    save(epoch, i + 1, {"seen": seen, "loss_sum": loss_sum.cpu(),
                                        "probe_hits": probe_hits.cpu()})
                    _interrupted(logger, stop.signum, epoch, i + 1, steps_per_epoch, step, out)
            bar.close()
            check_finite(epoch)
            mean_loss = (loss_sum / steps_per_epoch).item()
            result.epoch_loss[epoch + 1] = mean_loss
            epoch_record = {"kind": "epoch", "step": step, "epoch": epoch + 1, "loss": mean_loss,
                            "seconds": time.perf_counter() - t0,
                            "peak_mem_mib": peak_memory_mib(device)}
            if probe is not None:  # on the augmented views of the training images
                epoch_record["online_probe_train_top1"] = 100.0 * probe_hits.item() / seen
            logger.log(epoch_record)
            last = epoch + 1 == epochs
            due = cfg.eval.knn_every and ((epoch + 1) % cfg.eval.knn_every == 0 or last)
            if due and (stop.signum is None or last):  # stopping: save first, no kNN
                knn_monitor(epoch + 1)
            save(epoch + 1, 0, None)
            if cfg.train.save_every and (epoch + 1) % cfg.train.save_every == 0:
                keep = ckpt_path.with_name(f"epoch_{epoch + 1:04d}.pt")
                atomic_write(keep, lambda tmp: shutil.copyfile(ckpt_path, tmp))
            if stop.signum is not None and not last:
                _interrupted(logger, stop.signum, epoch + 1, 0, steps_per_epoch, step, out)
            if stop_after_epoch is not None and epoch + 1 >= stop_after_epoch and not last:
                result.epochs, result.steps = epoch + 1, step
                return result
    finally:
        logger.close()
    result.epochs, result.steps = epochs, step
    result.backbone_path = out / "backbone.safetensors"
    save_backbone(backbone_state_dict(model.backbone), result.backbone_path,
                  {"format": "torchvision", "arch": cfg.model.backbone, "stem": cfg.model.stem,
                   "image_size": str(cfg.data.image_size), "normalize": cfg.augment.normalize,
                   "seed": str(cfg.train.seed),
                   "config": OmegaConf.to_yaml(OmegaConf.structured(cfg))})
    return result
