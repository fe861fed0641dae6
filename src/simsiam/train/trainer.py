"""The pretraining loop: batches -> method -> optimizer step, with guards, monitor, checkpoints.

A thin loop over named objects (docs/ARCHITECTURE.md): the method (:mod:`simsiam.methods`)
owns its networks, loss and parameter groups, its batches are :mod:`simsiam.data.batches`;
:class:`Run` holds what the loop works with (checkpointer, guards, probe, monitor) and
:class:`~simsiam.train.state.RunState` where it is. :func:`train_one_epoch` runs one epoch,
:func:`_fit` the epochs; a stop (a signal, ``--stop-after-epoch``) is a :class:`StopRequest`
raised in the loop and handled in one place, :func:`_stop`, which saves and reports.

Data parallelism: under ``torchrun`` (see :mod:`simsiam.distributed`) the method is
wrapped in DistributedDataParallel with every BatchNorm synchronised; ``train.batch_size``
is the global batch, so the steps per epoch, the lr and the schedule are those of one
process with the whole batch. Rank 0 alone logs, writes checkpoints and exports; a stop
signal on any process stops all of them at the same step.
"""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

from simsiam.config import Config, config_to_dict
from simsiam.data.dataset import DataSplits, load_data
from simsiam.data.loaders import input_pipeline, make_batches
from simsiam.distributed import DistContext, all_reduce_sum, convert_sync_batchnorm
from simsiam.distributed.context import setup_distributed
from simsiam.distributed.ddp import wrap_ddp
from simsiam.errors import CollapseError
from simsiam.eval.collapse import CollapseGuard, effective_rank, healthy_std, rank_reference
from simsiam.eval.monitor import Monitor, monitor_line, start_name
from simsiam.eval.probe import OnlineProbe
from simsiam.methods import Method, batch_options, build_method
from simsiam.models.backbones import feature_dim
from simsiam.optim.factory import build_optimizer
from simsiam.optim.plan import BatchPlan, batch_plan, check_global_batch
from simsiam.optim.schedule import LrSchedule
from simsiam.train.checkpoint import Checkpointer
from simsiam.train.exhaustion import exhaustion_kind, raise_if_exhausted
from simsiam.train.guards import NonFiniteGuard
from simsiam.train.interrupt import RunInterrupted, StopSignals, stopped_message
from simsiam.train.logger import MetricsLogger, NullLogger
from simsiam.train.preflight import check_output_paths, check_stop_after_epoch, finished_run_error
from simsiam.train.resources import peak_memory_mib
from simsiam.train.run_dir import (
    check_resume_data,
    check_run_dir,
    resume_config,
    resume_held_out,
    start_run_dir,
    truncate_metrics,
)
from simsiam.train.run_lock import RunLock, hold_run_dir
from simsiam.train.run_objects import Run
from simsiam.train.state import EpochSums, RunResult, RunState
from simsiam.train.step import bf16_for_run, train_step
from simsiam.train.summary import epoch_line, setup_record, startup_summary
from simsiam.weights import initial_backbone


class StopRequest(Exception):
    """Ends a run before its last epoch; raised in the loop, handled by :func:`_stop` only.

    Attributes:
        signum: the signal that asked for it, or None for ``--stop-after-epoch``.
    """

    def __init__(self, signum: int | None) -> None:
        super().__init__(signum)
        self.signum = signum


def pretrain(cfg: Config, resume: bool = False, overwrite: bool = False,
             progress: bool = True, stop_after_epoch: int | None = None,
             allow_changed_data: bool = False) -> RunResult:
    """Pretrain ``cfg.method`` on ``cfg.data`` and return what was measured.

    ``stop_after_epoch`` ends the run early after that epoch's checkpoint, as an
    interruption would (no export); ``resume=True`` then continues the same schedule.
    Resuming restores the model, optimizer, step, epoch, position inside the epoch, the
    epoch's running sums, RNG states and the online probe; the lr schedule is a function
    of the step, so a resumed run computes what an uninterrupted one would. It resumes
    only on the data the run started with (``RUN/data.json``), or with
    ``allow_changed_data`` on the data as they are now, the held-out split kept. The run
    holds ``RUN/run.lock`` from its first check to its end (:mod:`.run_lock`).

    Raises:
        ConfigError / DataError: bad settings, output directory or data, before training.
        FloatingPointError: the loss became NaN or infinite; names the first such step;
            nothing is saved after it, so the last checkpoint is the last good one.
        RunInterrupted: SIGINT or SIGTERM arrived; a checkpoint of the current step was
            saved first (see :mod:`simsiam.train.interrupt`).
        CollapseError: ``eval.stop_on_collapse`` and the collapse guard fired.
        ResourceError: out of memory, or a DataLoader worker killed, in the loop: one line
            naming the settings to lower (:mod:`simsiam.train.exhaustion`).
    """
    out = Path(cfg.train.out)
    check_stop_after_epoch(stop_after_epoch, cfg.train.epochs)
    ctx = setup_distributed(cfg.train.device)
    lock = RunLock(out)
    try:
        check_global_batch(cfg.train.batch_size, ctx.world_size)  # before any work
        check_output_paths(cfg)
        hold_run_dir(lock, ctx)  # rank 0 owns the directory until the run ends
        check_run_dir(out, resume, overwrite)
        ctx.barrier()  # every process has checked before rank 0 writes anything
        with StopSignals() as signals:
            return _pretrain(cfg, out, resume, progress and ctx.is_main, stop_after_epoch,
                             signals, ctx, allow_changed_data)
    finally:
        lock.release()
        ctx.close()


def _pretrain(cfg: Config, out: Path, resume: bool, progress: bool,
              stop_after_epoch: int | None, signals: StopSignals,
              ctx: DistContext, allow_changed_data: bool = False) -> RunResult:
    checkpointer = Checkpointer(out, ctx, cfg.train.save_every)
    held_out = None
    if resume:
        checkpointer.load()  # a checkpoint of a newer format is named before its config
        cfg = resume_config(cfg, out)
        held_out = resume_held_out(out)
    pipeline = input_pipeline(cfg, ctx.device)
    splits = ctx.main_first(lambda: load_data(cfg.data, cfg.train.seed, progress, pipeline,
                                              held_out))
    if resume:
        check_resume_data(out, splits, allow_changed_data, write=ctx.is_main)
    run, state = _build(cfg, splits, resume, progress, signals, ctx, checkpointer)
    if ctx.is_main:
        print(startup_summary(splits, cfg, run.plan, str(ctx.device), run.bf16,
                              state.step if resume else None), flush=True)
    try:
        if cfg.eval.knn_at_start and state.step == 0:
            start = _monitor(run, state)
            if start and ctx.is_main and not progress:
                print(f"epoch 0 ({start_name(cfg)}): {monitor_line(start)}", flush=True)
        signals.defer()  # from here a signal saves a checkpoint at the next step boundary
        finished = _fit(run, state, stop_after_epoch)
    except (MemoryError, RuntimeError, EOFError, ConnectionResetError) as exc:  # one line
        raise_if_exhausted(exc, run.cfg, state.step, run.checkpointer)
        raise
    finally:
        run.logger.close()
    result = RunResult(out, state.epoch, state.step, state.knn, state.probe_top1,
                       state.epoch_loss, len(splits.test) if splits.test else 0,
                       evals=state.evals, labelled=splits.train.labelled)
    if finished:
        result.backbone_path = run.checkpointer.export_method(run.model, cfg)
    return result


def _build_model(cfg: Config, plan: BatchPlan, ctx: DistContext) -> Method:
    """The method on the training device, seeded, on its initial backbone (``model.image_init``
    loaded); SyncBatchNorm under torchrun."""
    torch.manual_seed(cfg.train.seed)
    model = build_method(cfg.method, cfg.model, cfg.data.image_size, plan.steps_per_epoch,
                         initial_backbone(cfg.model))
    if ctx.distributed:  # never for a single process
        model = convert_sync_batchnorm(model, ctx.device.type)
    fmt = torch.channels_last if cfg.train.channels_last else torch.preserve_format
    return model.to(ctx.device).to(memory_format=fmt)


def _build(cfg: Config, splits: DataSplits, resume: bool, progress: bool,
           signals: StopSignals, ctx: DistContext,
           checkpointer: Checkpointer) -> tuple[Run, RunState]:
    """Model, optimizer, probe and run state (restored from the checkpoint with
    ``resume``, else the run directory is (re)started with ``config.yaml`` and the
    untrained weights ``backbone_init.safetensors``), then the loop's other objects.
    The online probe needs labels (two classes or more)."""
    device, out = ctx.device, checkpointer.out
    train = splits.train
    plan = batch_plan(len(train), cfg.train.batch_size, ctx.world_size, cfg.optim.base_lr,
                      cfg.optim.lr_scaling)
    model = _build_model(cfg, plan, ctx)
    optimizer = build_optimizer(model.param_groups(), cfg.optim, plan.peak_lr)
    probe = (OnlineProbe(feature_dim(cfg.model.backbone), train.labels, len(train.classes),
                         cfg.eval.probe_lr, device, ctx.distributed)
             if cfg.eval.online_probe and train.labelled else None)
    # the loader refuses data its method cannot learn from: before the run directory changes
    loader = make_batches(model.batch_kind, train, cfg, device, ctx.rank, ctx.world_size,
                          **batch_options(cfg.method, cfg.model))
    state = RunState()
    if resume:
        checkpointer.restore(state, model, optimizer, probe, device)
        if state.epoch >= cfg.train.epochs:
            raise finished_run_error(out, cfg.train.epochs)
        if ctx.is_main:
            truncate_metrics(out, state.step)
    elif ctx.is_main:  # everything is checked and built: only now replace a previous run
        start_run_dir(out, cfg, splits)
    ctx.barrier()
    if not resume:  # the random-init baseline: knn / embed / neighbors take it as it is
        checkpointer.export_method(model, cfg, init=True)
    # Loaded state first, then DDP (which broadcasts rank 0's weights to all processes).
    step_model = wrap_ddp(model, ctx) if ctx.distributed else model
    if probe is not None:
        probe.wrap(ctx)
    logger = (MetricsLogger(out, purge_step=state.step + 1 if resume else None)
              if ctx.is_main else NullLogger())
    bf16 = bf16_for_run(cfg, device)
    rank_healthy = rank_reference(min(plan.per_device, cfg.eval.rank_rows), model.dim)
    logger.log(setup_record(splits, plan, ctx, bf16, state.step, cfg))
    run = Run(
        cfg=cfg, ctx=ctx, plan=plan, model=model,
        step_model=torch.compile(step_model) if cfg.train.compile else step_model,
        optimizer=optimizer,
        schedule=LrSchedule(plan.peak_lr, plan.steps_per_epoch, cfg.train.epochs,
                            cfg.optim.warmup_epochs, cfg.optim.schedule == "step"),
        loader=loader,
        probe=probe, monitor=Monitor(train, splits.test, cfg, device), checkpointer=checkpointer,
        logger=logger, nonfinite=NonFiniteGuard(device, state.step),
        collapse=CollapseGuard.for_run(cfg.eval, model.dim, model.collapse_measure,
                                       rank_healthy),
        rank_healthy=rank_healthy,
        signals=signals, bf16=bf16,
        memory_format=torch.channels_last if cfg.train.channels_last else torch.preserve_format,
        progress=progress)
    return run, state


def _fit(run: Run, state: RunState, stop_after_epoch: int | None) -> bool:
    """The epochs from ``state`` to the end; False when the run stopped early."""
    epochs = run.cfg.train.epochs
    try:
        while state.epoch < epochs:
            train_one_epoch(run, state)
            stopping = _end_epoch(run, state)
            last = state.epoch == epochs
            if stopping and not last:
                raise StopRequest(run.signals.signum or signal.SIGTERM)
            if stop_after_epoch is not None and state.epoch >= stop_after_epoch and not last:
                raise StopRequest(None)
    except StopRequest as request:
        _stop(run, state, request)
        return False
    return True


def train_one_epoch(run: Run, state: RunState) -> None:
    """Train from step ``state.batch_in_epoch`` to the end of epoch ``state.epoch``.

    Each step: set the lr of every group, move the batch, one optimizer step, the online
    probe, the method's post-step update; the guards look at the log steps.

    Raises:
        StopRequest: a stop signal arrived before the epoch's last step.
        FloatingPointError, CollapseError: from the guards (see :func:`_log_step`).
    """
    cfg, plan = run.cfg, run.plan
    first = state.batch_in_epoch  # > 0: resuming mid-epoch
    run.loader.sampler.set_epoch(state.epoch, start=first * plan.global_batch)
    run.model.train()
    state.sums = EpochSums(run.ctx.device, run.ctx.world_size, run.ctx.is_main,
                           state.partial if first else None)
    total_steps = plan.steps_per_epoch * cfg.train.epochs
    with tqdm(total=plan.steps_per_epoch, initial=first, unit="step", dynamic_ncols=True,
              desc=f"epoch {state.epoch + 1}/{cfg.train.epochs}", disable=not run.progress,
              mininterval=1.0) as bar:
        for i, batch in enumerate(run.loader, start=first):
            lr = run.schedule.apply(run.optimizer, state.epoch, i)
            batch = batch.to(run.ctx.device, run.memory_format)
            loss, metrics = train_step(run.step_model, run.optimizer, batch.inputs, run.bf16)
            hits = run.probe.update(metrics["features"], batch.index) if run.probe else None
            run.model.on_step_end(state.step, total_steps)
            state.step, state.batch_in_epoch = state.step + 1, i + 1
            state.sums.add(loss, len(batch), hits)
            run.nonfinite.observe(loss)
            bar.update(1)
            if state.step % cfg.train.log_every == 0 or i + 1 == plan.steps_per_epoch:
                _log_step(run, state, loss, metrics, lr, bar)
            if i + 1 < plan.steps_per_epoch and run.stop_requested():
                raise StopRequest(run.signals.signum or signal.SIGTERM)


def _log_step(run: Run, state: RunState, loss: torch.Tensor, metrics: dict[str, torch.Tensor],
              lr: float, bar: tqdm) -> None:
    """A ``step`` record (means over the processes, so all take the same decisions), after
    the non-finite check, with both collapse measures of the step's embedding (the
    effective rank on at most ``eval.rank_rows`` rows of it); then the collapse guard.

    Raises:
        FloatingPointError: a NaN/inf loss since the last check.
        CollapseError: the collapse guard fired and ``eval.stop_on_collapse`` is on.
    """
    run.nonfinite.check_loss(state.epoch, run.logger, run.checkpointer.kept())
    world = run.ctx.world_size
    rank = effective_rank(metrics["embedding"], run.cfg.eval.rank_rows)
    shown = all_reduce_sum(torch.stack([loss.float(), metrics["collapse_std"].float(),
                                        rank])) / world
    healthy = healthy_std(run.model.dim)
    # lr_predictor: the lr of a fixed_lr group (SimSiam's predictor), else the schedule's
    lr_fixed = next((g["lr"] for g in run.optimizer.param_groups if g.get("fixed_lr")), lr)
    record = {"kind": "step", "step": state.step, "epoch": state.epoch,
              "loss": shown[0].item(), "lr": lr, "lr_predictor": lr_fixed,
              "collapse_std": shown[1].item(), "collapse_healthy": healthy,
              "collapse_rank": shown[2].item(), "collapse_rank_healthy": run.rank_healthy,
              "pairs_per_s": state.sums.seen * world / (time.perf_counter()
                                                        - state.sums.started)}
    run.logger.log(record)
    shown_eval = state.evals[max(state.evals)] if state.evals else {}
    bar.set_postfix(loss=f"{record['loss']:.3f}", lr=f"{lr:.4f}",
                    std=f"{record['collapse_std']:.4f}/{healthy:.4f}",
                    rank=f"{record['collapse_rank']:.0f}/{run.rank_healthy:.0f}",
                    **({"copy@1": f"{shown_eval['copy_top1']:.1f}%"}
                       if "copy_top1" in shown_eval else {}))
    guard = run.collapse
    if not guard.update(state.step, record[f"collapse_{guard.measure}"]):
        return
    msg = guard.message(state.step)
    run.logger.log({"kind": "collapse", "step": state.step, "epoch": state.epoch,
                    "measure": guard.measure, "collapse_std": record["collapse_std"],
                    "collapse_rank": record["collapse_rank"], "threshold": guard.threshold,
                    "since_step": guard.since})
    tqdm.write(f"WARNING {msg}", file=sys.stderr)
    if run.cfg.eval.stop_on_collapse:
        raise CollapseError(f"{msg}. Stopped (--stop-on-collapse); "
                            f"{run.checkpointer.kept('last checkpoint')}")


def _end_epoch(run: Run, state: RunState) -> bool:
    """Close the epoch: ``epoch`` record, the monitor if due, a line without a progress
    bar, checkpoint. Returns whether a stop was requested (the monitor is then skipped,
    except after the last epoch)."""
    run.nonfinite.check_loss(state.epoch, run.logger, run.checkpointer.kept())
    seen, loss_sum, hits = state.sums.totals()
    mean_loss = (loss_sum / run.plan.steps_per_epoch).item()
    state.epoch, state.batch_in_epoch, state.partial = state.epoch + 1, 0, None
    state.epoch_loss[state.epoch] = mean_loss
    record = {"kind": "epoch", "step": state.step, "epoch": state.epoch, "loss": mean_loss,
              "seconds": time.perf_counter() - state.sums.started,
              "peak_mem_mib": peak_memory_mib(run.ctx.device)}
    if run.probe is not None:  # on the augmented views of the training images
        record["online_probe_train_top1"] = 100.0 * hits.item() / seen
    run.logger.log(record)
    last = state.epoch == run.cfg.train.epochs
    stopping = run.stop_requested()
    evaluation = None
    if run.monitor.due(state.epoch) and (not stopping or last):  # stopping: save first
        try:
            evaluation = _monitor(run, state)
        except (MemoryError, RuntimeError) as exc:
            if exhaustion_kind(exc) is not None:  # keep the epoch trained, lose its eval
                _save(run, state)
            raise
    if run.ctx.is_main and not run.progress:  # no bar: one line per epoch
        print(epoch_line(state.epoch, run.cfg.train.epochs, mean_loss, record["seconds"],
                         monitor_line(evaluation) if evaluation else None), flush=True)
    _save(run, state)
    return stopping


def _monitor(run: Run, state: RunState) -> dict | None:
    """The monitor after ``state.epoch`` epochs (label-free signals; with labels kNN and
    the online probe's held-out score); its record, or None without held-out images."""
    return run.monitor.run(run.model, run.probe, state, run.logger, run.progress)


def _save(run: Run, state: RunState) -> None:
    """Checkpoint the current step, once the weights are shown to be finite."""
    epoch_of_step = state.epoch - 1 if state.batch_in_epoch == 0 else state.epoch
    run.nonfinite.check_parameters(run.model, state.step, epoch_of_step, run.logger,
                                   run.checkpointer.kept())
    run.checkpointer.save(state, run.model, run.optimizer, run.probe, config_to_dict(run.cfg),
                          run.ctx.device)


def _stop(run: Run, state: RunState, request: StopRequest) -> None:
    """The one stop path: save the step if it is not saved yet (a stop inside an epoch,
    with the epoch's running sums), then report a signal as :class:`RunInterrupted`; a
    ``--stop-after-epoch`` stop (already saved at the epoch's end) just returns."""
    if state.batch_in_epoch:
        run.nonfinite.check_loss(state.epoch, run.logger, run.checkpointer.kept())
        state.partial = state.sums.snapshot()
        _save(run, state)
    if request.signum is None:
        return
    name = signal.Signals(request.signum).name
    run.logger.log({"kind": "interrupted", "signal": name, "step": state.step,
                    "epoch": state.epoch, "batch_in_epoch": state.batch_in_epoch})
    raise RunInterrupted(request.signum, stopped_message(name, state, run.plan.steps_per_epoch,
                                                         run.checkpointer))
