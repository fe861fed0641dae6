"""Loading a backbone for evaluation: now :mod:`simsiam.weights.backbones` (the weights floor,
below evaluation and training), re-exported here."""

from simsiam.weights.backbones import (
    backbone_file_info,
    extract_backbone_state,
    infer_arch,
    initial_backbone,
    load_backbone_for_eval,
    load_image_init,
    read_backbone_weights,
    resolve_run_checkpoint,
    timm_backbone_state,
)

__all__ = ["backbone_file_info", "extract_backbone_state", "infer_arch", "initial_backbone",
           "load_backbone_for_eval", "load_image_init", "read_backbone_weights",
           "resolve_run_checkpoint", "timm_backbone_state"]
