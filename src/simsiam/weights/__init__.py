"""The weights floor: the file formats of a training checkpoint and an exported backbone
(:mod:`.files`) and reading a backbone from any layout (:mod:`.backbones`: for evaluation,
and for a run that starts from ``model.image_init``). Below evaluation and training, which
both read these files; the run's checkpointing (:class:`simsiam.train.checkpoint.Checkpointer`)
stays in training."""

from simsiam.weights.backbones import (
    backbone_file_info,
    build_initial_method,
    extract_backbone_state,
    infer_arch,
    initial_backbone,
    load_backbone_for_eval,
    load_image_init,
    read_backbone_weights,
    resolve_run_checkpoint,
    timm_backbone_state,
)
from simsiam.weights.files import (
    FORMAT,
    load_backbone_file,
    load_checkpoint,
    save_backbone,
    save_checkpoint,
    write_checkpoint,
)

__all__ = ["FORMAT", "backbone_file_info", "build_initial_method", "extract_backbone_state",
           "infer_arch", "initial_backbone", "load_backbone_file", "load_backbone_for_eval",
           "load_checkpoint", "load_image_init", "read_backbone_weights", "resolve_run_checkpoint",
           "save_backbone", "save_checkpoint", "timm_backbone_state", "write_checkpoint"]
