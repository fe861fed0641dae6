"""The run's checkpoints and its exported backbone: :class:`Checkpointer`. The file formats
(save/load of a checkpoint and of a backbone file) are :mod:`simsiam.weights.files`,
re-exported here (written atomically, loaded safely: see that module).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch

from simsiam.augment.stats import normalization, resolved_normalize
from simsiam.config.load import config_to_yaml
from simsiam.errors import CheckpointError, DiskFullError
from simsiam.fileio import atomic_write, remove_stale_temps
from simsiam.launch import resume_command
from simsiam.models.backbones import backbone_state_dict, is_timm
from simsiam.train.summary import eval_transform_spec
from simsiam.weights.files import (
    FORMAT,
    load_backbone_file,
    load_checkpoint,
    save_backbone,
    save_checkpoint,
    write_checkpoint,
)

__all__ = ["FORMAT", "Checkpointer", "atomic_write", "remove_stale_temps", "save_checkpoint",
           "load_checkpoint", "save_backbone", "load_backbone_file", "rng_state",
           "restore_rng_state"]


def rng_state(device: torch.device) -> dict[str, torch.Tensor]:
    """The random-generator states a checkpoint keeps: ``torch_rng`` (CPU) and, on a GPU,
    ``cuda_rng`` of ``device`` (rank 0's device under torchrun)."""
    state = {"torch_rng": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda_rng"] = torch.cuda.get_rng_state(device)
    return state


def restore_rng_state(state: dict[str, Any], device: torch.device) -> None:
    """Set the generators from :func:`rng_state`'s entries of ``state``. ``cuda_rng`` goes
    to ``device`` (older checkpoints hold a list, one state per GPU: its first is used, so
    a run resumes on any number of GPUs)."""
    torch.set_rng_state(state["torch_rng"])
    if device.type == "cuda" and "cuda_rng" in state:
        rng = state["cuda_rng"]
        torch.cuda.set_rng_state(rng[0] if isinstance(rng, (list, tuple)) else rng, device)


class Checkpointer:
    """The one owner of a run's checkpoint format, its writes and the export.

    ``RUN/checkpoints/last.pt`` holds ``format``, ``model``, ``optimizer``, ``config``,
    the RNG states (``torch_rng``, ``cuda_rng``), the run state's fields (``epoch``,
    ``step``, ``batch_in_epoch``, ``partial``, ``knn``, ``epoch_loss``, ``probe_top1``; see
    :class:`~simsiam.train.state.RunState`) and, with an online probe, ``probe`` and
    ``probe_optimizer``. Under torchrun rank 0 writes and every process waits at a barrier
    until the file is complete. Every ``keep_every`` epochs a copy
    ``checkpoints/epoch_NNNN.pt`` is kept. (Evaluation reads only ``model`` and ``config``
    of such a file, in :mod:`simsiam.weights.backbones`.)

    Args:
        out: the run directory.
        ctx: the process group (:class:`simsiam.distributed.DistContext`).
        keep_every: ``train.save_every`` (0: only last.pt).
    """

    def __init__(self, out: Path, ctx, keep_every: int = 0) -> None:
        self.out = Path(out)
        self.path = self.out / "checkpoints" / "last.pt"
        self.ctx = ctx
        self.keep_every = keep_every
        self.last_saved: tuple[int, int] | None = None  # (epoch, step) of the last write
        self._loaded: dict[str, Any] | None = None  # read by load(), used by restore()

    def kept(self, what: str = "last good checkpoint") -> str:
        """The sentence an error ends with: which checkpoint is left to resume from."""
        if self.last_saved is None:
            return "no checkpoint was written yet"
        epoch, step = self.last_saved
        return f"the {what}, {self.path} (epoch {epoch}, step {step}), is kept"

    def save(self, state, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
             probe, config: dict[str, Any], device: torch.device) -> None:
        """Write ``last.pt`` (rank 0; the others wait), then a kept copy if one is due.

        Args:
            state: the :class:`~simsiam.train.state.RunState`.
            model, optimizer: the method and its optimizer.
            probe: the :class:`~simsiam.eval.probe.OnlineProbe`, or None.
            config: the resolved config as plain dicts.
            device: the training device (its CUDA RNG state is saved).
        """
        if not self.ctx.is_main:
            self.last_saved = (state.epoch, state.step)
            self.ctx.barrier()
            return
        ckpt = {"format": FORMAT, "config": config, **rng_state(device), **state.state_dict(),
                "model": model.state_dict(), "optimizer": optimizer.state_dict()}
        if probe is not None:
            ckpt |= {"probe": probe.classifier.state_dict(),
                     "probe_optimizer": probe.optimizer.state_dict()}
        try:
            atomic_write(self.path, lambda tmp: write_checkpoint(ckpt, tmp))
        except DiskFullError as exc:
            then = (f"continue with: {resume_command(self.out)}"
                    if self.last_saved is not None else "start it again with the same "
                    "command and --overwrite (nothing to resume from)")
            raise DiskFullError(f"{exc}. The run stopped at epoch {state.epoch}, step "
                                f"{state.step}: {self.kept()}; after freeing space "
                                f"{then}") from None
        self.last_saved = (state.epoch, state.step)
        if self.keep_every and state.batch_in_epoch == 0 and state.epoch % self.keep_every == 0:
            keep = self.path.with_name(f"epoch_{state.epoch:04d}.pt")
            atomic_write(keep, lambda tmp: shutil.copyfile(self.path, tmp))
        self.ctx.barrier()

    def load(self) -> dict[str, Any]:
        """The checkpoint to resume from, format 1 or 2 (kept for :meth:`restore`).

        Raises:
            CheckpointError: missing or unsafe file, or one written by a newer simsiam.
        """
        if self._loaded is None:
            ckpt = load_checkpoint(self.path)
            version = int(ckpt.get("format", 1))
            if version > FORMAT:
                raise CheckpointError(
                    f"'{self.path}' has checkpoint format {version}, written by a newer "
                    f"simsiam than this one (which reads formats 1-{FORMAT}); upgrade "
                    "simsiam to resume")
            self._loaded = ckpt
        return self._loaded

    def restore(self, state, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                probe, device: torch.device) -> None:
        """Load ``last.pt`` into ``state``, ``model``, ``optimizer`` and ``probe`` (see
        :meth:`save`) and set the RNG.

        The optimizer's groups keep the flags of the current method (format 1 wrote none)
        and their effect (weight decay 0 in a ``no_weight_decay`` group). A probe absent
        from the file (switched on after the run started) keeps its fresh state.
        """
        ckpt = self.load()
        self._loaded = None
        state.load_state_dict(ckpt)
        model.load_state_dict(ckpt["model"])
        flags = [{k: g[k] for k in ("fixed_lr", "no_weight_decay") if k in g}
                 for g in optimizer.param_groups]
        optimizer.load_state_dict(ckpt["optimizer"])
        for group, keep in zip(optimizer.param_groups, flags, strict=True):
            group.update(keep)
            if group.get("no_weight_decay"):
                group["weight_decay"] = 0.0
        if probe is not None and "probe" in ckpt:
            probe.classifier.load_state_dict(ckpt["probe"])
            probe.optimizer.load_state_dict(ckpt["probe_optimizer"])
        restore_rng_state(ckpt, device)
        self.last_saved = (state.epoch, state.step)

    def export_backbone(self, backbone: torch.nn.Module, cfg,
                        name: str = "backbone.safetensors") -> Path:
        """Write ``RUN/<name>`` (torchvision key names, or timm's for a ``timm/<name>``
        backbone; rank 0, the others wait) and return its path. Its metadata says how to
        feed it: ``format`` ("torchvision" or "timm"), ``arch`` (``model.backbone``, e.g.
        ``resnet50`` or ``timm/resnet18``), ``stem``, ``image_size``, ``normalize`` (the
        statistics the run used: ``cifar10`` or ``imagenet``, never ``auto``) with
        ``normalize_mean`` / ``normalize_std`` (JSON lists), ``seed``, ``eval_transform``
        (JSON: the exact resize, crop and normalisation numbers the evaluation commands
        apply, see :func:`simsiam.train.summary.eval_transform_spec`),
        the whole run ``config`` (YAML) and, for timm, ``timm_version``."""
        path = self.out / name
        # the statistics the run used, by name and in numbers ("auto" resolved at its size)
        normalize = resolved_normalize(cfg.augment.normalize, cfg.data.image_size)
        mean, std = normalization(normalize, cfg.data.image_size)
        spec = eval_transform_spec(cfg.data.image_size, normalize)
        metadata = {"format": "torchvision", "arch": cfg.model.backbone,
                    "stem": cfg.model.stem, "image_size": str(cfg.data.image_size),
                    "normalize": normalize, "normalize_mean": json.dumps(list(mean)),
                    "normalize_std": json.dumps(list(std)), "seed": str(cfg.train.seed),
                    "eval_transform": json.dumps(spec), "config": config_to_yaml(cfg)}
        if is_timm(cfg.model.backbone):
            import timm

            metadata |= {"format": "timm", "timm_version": timm.__version__}
        if self.ctx.is_main:
            try:
                save_backbone(backbone_state_dict(backbone), path, metadata)
            except DiskFullError as exc:
                if self.path.exists():
                    raise
                raise DiskFullError(f"{exc} with --overwrite (the run wrote no checkpoint "
                                    "yet: nothing to resume)") from None
        self.ctx.barrier()
        return path

    def export_method(self, method: torch.nn.Module, cfg, init: bool = False) -> Path:
        """Export a method: its backbone as ``RUN/backbone.safetensors`` (:meth:`export_backbone`)
        and each of its extra exports (``Method.export_extras()``: file stem -> state dict,
        e.g. CLIP's ``text_tower``) as ``RUN/<stem>.safetensors`` with the run's method and
        whole ``config`` (YAML) as metadata; with ``init``, the weights before the first
        step as ``*_init.safetensors``. Rank 0 writes, the others wait. Returns the
        backbone's path."""
        suffix = "_init" if init else ""
        path = self.export_backbone(method.backbone, cfg, f"backbone{suffix}.safetensors")
        for stem, state in method.export_extras().items():
            if self.ctx.is_main:
                save_backbone(state, self.out / f"{stem}{suffix}.safetensors",
                              {"format": "method-extras", "method": cfg.method,
                               "config": config_to_yaml(cfg)})
        self.ctx.barrier()
        return path
