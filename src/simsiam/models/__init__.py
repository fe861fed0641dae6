"""Backbones (torchvision ResNets, optional CIFAR stem) and MLP heads."""

from simsiam.models.backbones import build_backbone, feature_dim, torchvision_resnet
from simsiam.models.heads import MLPHead, PredictionHead, ProjectionHead

__all__ = ["build_backbone", "feature_dim", "torchvision_resnet", "MLPHead", "ProjectionHead",
           "PredictionHead"]
