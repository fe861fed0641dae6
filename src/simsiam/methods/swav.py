"""SwAV: online clustering; codes from Sinkhorn-Knopp, predicted from the other views.

Source: SIMSIAM.md section 6 (SwAV row); Caron et al. 2020, "Unsupervised Learning of
Visual Features by Contrasting Cluster Assignments": section 3.1 (prototypes, swapped
prediction with T = 0.1, codes by 3 Sinkhorn iterations with epsilon = 0.05 computed
without gradient), section 3.2 (multi-crop: codes from the large crops only, predicted
from every crop), Appendix A (prototypes l2-normalised at each step, frozen during the
first epoch; 3,000 prototypes on ImageNet; the feature queue for small batches, with
3,840 rows from epoch 15 on ImageNet).

As in facebookresearch/swav (``src/resnet50.py``): views of one size pass through the
backbone together, then the projection head runs once on the features of every crop,
so the head's BN statistics are those of all crops together. The head is SwAV's:
Linear(c, 2048) BN ReLU Linear(2048, 128), both Linear layers with a bias. Its optimizer
is LARS as ``main_swav.py`` wraps it (apex LARC, trust 0.001, no clipping, every
parameter adapted and decayed): base lr 4.8 at batch 4096 (0.3 x batch/256), weight decay
1e-6, 10 warm-up epochs, cosine per step; SwAV's final lr (base / 1000) and warm-up start
(0.3) are not modelled (our cosine ends at 0, the warm-up starts at 0). Under data
parallelism the codes come from Sinkhorn over the global batch (SwAV's distributed
Sinkhorn) and BatchNorm is synchronised.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from simsiam.distributed.ops import gather_no_grad, shard_bounds, world_size
from simsiam.errors import require
from simsiam.methods.base import Method, RunShape, Traits, nonempty, param_group, step_metrics
from simsiam.methods.contrastive import sinkhorn, swav_loss
from simsiam.methods.settings.swav import CARD, SwAVConfig
from simsiam.models.heads import MLPHead


class SwAV(Method):
    """The SwAV model.

    Args:
        backbone: images ``(B, 3, H, W)`` -> features ``(B, feature_dim)`` at any H, W
            (a ResNet with global pooling: large and small crops both work).
        feature_dim: c, the backbone's output width.
        dim: d, the projection width (128).
        hidden_dim: projector hidden width (2048).
        num_prototypes: K (3000 on ImageNet).
        temperature: T of the swapped prediction (0.1).
        epsilon, sinkhorn_iterations: Sinkhorn's entropy weight (0.05) and rounds (3).
        large_views: how many leading views are large crops that get codes (2).
        freeze_prototypes_steps: the prototypes get a zero gradient for this many
            optimizer steps (SwAV: one epoch's worth of steps); 0 trains them from the start.
        queue_length: rows of the optional feature queue (0: none; SwAV uses 3,840 at
            small batches): per large view, the l2-normalised projections of the latest
            global batches, newest first, the same on every process (each enqueues the
            gathered global batch). Once full, they join the batch in Sinkhorn, each
            process taking its contiguous share of the rows (the codes are those of the
            batch's rows), so the equal-partition constraint acts on more samples than
            one small batch holds; a run equals one process with the whole batch and
            resumes on any process count.
        queue_start_steps: the queue starts filling after this many optimizer steps (SwAV:
            15 epochs' worth on ImageNet) and is used from the step it is full.

    The projector is Linear(c, hidden) BN ReLU Linear(hidden, d) (:class:`MLPHead`, biases
    on both Linear layers, SwAV's); its output is l2-normalised and scored against the
    prototypes ``Linear(d, K, bias=False)``, whose
    rows are l2-normalised in place (no_grad) at the start of every forward pass.

    Raises:
        ValueError: T, epsilon or a size that is not positive, or freeze, queue length or
            queue steps < 0.

    Attributes:
        queue: ``(large_views, L, d)`` float32 buffer (only with a queue), rows newest first;
            ``queue_rows`` counts the filled rows and ``queue_filling`` is 1 once filling.
    """

    card = CARD
    name = CARD.name
    Settings = SwAVConfig
    traits = Traits(negatives=False, momentum_encoder=False, queue=False)
    outside_backbone = ("prototypes.", "prototype_grad_scale", "queue")  # queue, queue_rows..
    multi_crop = CARD.multi_crop
    # Multi-crop: 2 large crops and 6 small ones (SwAV's ImageNet recipe; the large crops'
    # area 0.14-1 is its view recipe, simsiam.augment.recipes).
    published = CARD.published

    def __init__(self, backbone: nn.Module, feature_dim: int, dim: int = 128,
                 hidden_dim: int = 2048, num_prototypes: int = 3000, temperature: float = 0.1,
                 epsilon: float = 0.05, sinkhorn_iterations: int = 3, large_views: int = 2,
                 freeze_prototypes_steps: int = 0, queue_length: int = 0,
                 queue_start_steps: int = 0) -> None:
        super().__init__()
        if min(temperature, epsilon) <= 0 or min(num_prototypes, sinkhorn_iterations,
                                                 large_views) < 1 or freeze_prototypes_steps < 0:
            raise ValueError(f"SwAV needs temperature, epsilon > 0, num_prototypes, "
                             f"sinkhorn_iterations, large_views >= 1 and "
                             f"freeze_prototypes_steps >= 0, got temperature={temperature} "
                             f"epsilon={epsilon} num_prototypes={num_prototypes} "
                             f"sinkhorn_iterations={sinkhorn_iterations} "
                             f"large_views={large_views} "
                             f"freeze_prototypes_steps={freeze_prototypes_steps}")
        self.backbone = backbone
        self.projector = MLPHead([feature_dim, hidden_dim, dim])
        self.prototypes = nn.Linear(dim, num_prototypes, bias=False)
        self.dim = dim
        self.temperature, self.epsilon = temperature, epsilon
        self.sinkhorn_iterations = sinkhorn_iterations
        self.large_views = large_views
        self.freeze_prototypes_steps = freeze_prototypes_steps
        # 1.0 when the prototypes learn, 0.0 while frozen; a buffer so a resumed run keeps
        # it and the forward pass never reads a Python flag that needs a host sync.
        self.register_buffer("prototype_grad_scale",
                             torch.tensor(0.0 if freeze_prototypes_steps > 0 else 1.0))
        if queue_length < 0 or queue_start_steps < 0:
            raise ValueError(f"SwAV needs a queue length >= 0 and queue start steps >= 0, "
                             f"got queue_length={queue_length} "
                             f"queue_start_steps={queue_start_steps}")
        self.queue_length = queue_length
        self.queue_start_steps = queue_start_steps
        self._queue_host: tuple[bool, int] | None = None  # (filling, rows) without a sync
        if self.queue_length:
            self.register_buffer("queue", torch.zeros(large_views, self.queue_length, dim))
            self.register_buffer("queue_rows", torch.zeros((), dtype=torch.long))
            self.register_buffer("queue_filling",
                                 torch.tensor(1 if queue_start_steps == 0 else 0))
            # a loaded state (resume) replaces the buffers: read them again once
            self.register_load_state_dict_post_hook(
                lambda module, _keys: setattr(module, "_queue_host", None))

    @classmethod
    def from_config(cls, settings: SwAVConfig, backbone: nn.Module, feature_dim: int,
                    image_size: int = 224, steps_per_epoch: int = 0) -> SwAV:
        """SwAV from ``model.swav``; the epoch counts become step counts with
        ``steps_per_epoch`` (rounded)."""
        s = settings
        return cls(backbone, feature_dim, dim=s.dim, hidden_dim=s.hidden_dim,
                   num_prototypes=s.num_prototypes, temperature=s.temperature,
                   epsilon=s.sinkhorn_epsilon, sinkhorn_iterations=s.sinkhorn_iterations,
                   large_views=2,
                   freeze_prototypes_steps=round(s.freeze_prototypes_epochs * steps_per_epoch),
                   queue_length=s.queue_size,
                   queue_start_steps=round(s.queue_start_epochs * steps_per_epoch))

    @classmethod
    def check(cls, settings: SwAVConfig, run: RunShape, where: str) -> None:
        """Positive sizes, and a queue that starts filling before the run ends."""
        s, k = settings, "model.swav."
        for key in ("dim", "hidden_dim", "num_prototypes", "sinkhorn_iterations"):
            require(getattr(s, key) >= 1, where, k + key, getattr(s, key),
                    "use a positive integer")
        for key in ("temperature", "sinkhorn_epsilon"):
            require(getattr(s, key) > 0, where, k + key, getattr(s, key),
                    "use a positive value (SwAV: temperature 0.1, epsilon 0.05)")
        require(s.freeze_prototypes_epochs >= 0, where, k + "freeze_prototypes_epochs",
                s.freeze_prototypes_epochs, "use 0 or more epochs")
        require(s.queue_size >= 0, where, k + "queue_size", s.queue_size,
                "use 0 (no queue) or a number of rows such as 3840")
        require(s.queue_start_epochs >= 0, where, k + "queue_start_epochs",
                s.queue_start_epochs, "use 0 or more epochs")
        require(not s.queue_size or s.queue_start_epochs < run.epochs, where,
                k + "queue_start_epochs", s.queue_start_epochs,
                f"the SwAV queue (model.swav.queue_size = {s.queue_size}) would start filling "
                f"after the last of train.epochs = {run.epochs} and never be used: lower "
                "model.swav.queue_start_epochs or set model.swav.queue_size=0")

    @torch.no_grad()
    def normalize_prototypes(self) -> None:
        """l2-normalise each prototype (row of ``prototypes.weight``) in place."""
        w = self.prototypes.weight
        w.copy_(F.normalize(w.float(), dim=1).to(w.dtype))

    def encode(self, views: list[torch.Tensor]) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Projections of every view, ``(B, d)`` each, and the backbone output of view 1.

        Consecutive views of one shape share a backbone pass (concatenated on the batch);
        the projector then runs once on the features of all views (SwAV's
        ``forward_head`` on the concatenated output).
        """
        feats: list[torch.Tensor] = []
        start = 0
        while start < len(views):
            end = start + 1
            while end < len(views) and views[end].shape == views[start].shape:
                end += 1
            feats.append(self.backbone(torch.cat(views[start:end])))
            start = end
        h = torch.cat(feats)
        return list(self.projector(h).chunk(len(views))), h[: views[0].shape[0]]

    def forward(self, views: list[torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Loss and metrics for ``views``: ``large_views`` large crops, then any small ones.

        Every view is ``(B, 3, H_v, W_v)`` float with one B; sizes may differ between views.

        Returns:
            ``(loss, metrics)``: the float32 swapped-prediction scalar (:func:`swav_loss`)
            and detached ``collapse_std`` (0-dim, of the projection of view 1),
            ``embedding`` (that z, ``(B, d)``) and ``features`` (``(B, c)``, backbone output
            of view 1).

        Raises:
            ValueError: fewer than ``large_views + ...`` views (at least max(2, large_views))
                or views with different batch sizes.
        """
        if len(views) < max(2, self.large_views) or \
                any(v.shape[0] != views[0].shape[0] for v in views):
            raise ValueError(f"SwAV takes at least {max(2, self.large_views)} views (the first "
                             f"{self.large_views} large) of one batch size, got shapes "
                             f"{[tuple(v.shape) for v in views]}")
        self.normalize_prototypes()
        zs, h1 = self.encode(views)
        g = self.prototype_grad_scale
        w = self.prototypes.weight
        # Value w; gradient g * dL/dw (zero while the prototypes are frozen).
        w_eff = w * g + w.detach() * (1 - g)
        with torch.autocast(device_type=w.device.type, enabled=False):
            scores = [F.normalize(z.float(), dim=1) @ w_eff.float().T for z in zs]
        filling, rows = self._queue_state()
        use_queue = self.queue_length > 0 and rows == self.queue_length
        codes = []
        for i, s in enumerate(scores[: self.large_views]):
            s = s.detach()
            if use_queue:  # this process's share of the queue joins its batch rows
                lo, hi = shard_bounds(self.queue_length)
                with torch.autocast(device_type=w.device.type, enabled=False):
                    s = torch.cat([self.queue[i, lo:hi] @ w.detach().float().T, s])
            q = sinkhorn(s, self.epsilon, self.sinkhorn_iterations,
                         distributed=world_size() > 1)
            codes.append(q[-zs[i].shape[0]:])
        loss = swav_loss(scores, codes, self.temperature)
        if self.training and self.queue_length and filling:
            self._enqueue([gather_no_grad(F.normalize(z.detach().float(), dim=1))
                           for z in zs[: self.large_views]])
        return loss, step_metrics(zs[0], h1)

    def _queue_state(self) -> tuple[bool, int]:
        """(filling, filled rows) of the queue, read from the buffers once after a load."""
        if not self.queue_length:
            return False, 0
        if self._queue_host is None:
            self._queue_host = (bool(self.queue_filling.item()), int(self.queue_rows.item()))
        return self._queue_host

    @torch.no_grad()
    def _enqueue(self, new: list[torch.Tensor]) -> None:
        """Put each large view's ``(B, d)`` rows (the global batch) in front of its queue;
        the oldest drop off."""
        length, b = self.queue_length, new[0].shape[0]
        for i, rows in enumerate(new):
            if b >= length:
                self.queue[i].copy_(rows[:length])
            else:
                self.queue[i, b:] = self.queue[i, :-b].clone()
                self.queue[i, :b] = rows
        filled = min(length, self._queue_state()[1] + b)
        self.queue_rows.fill_(filled)
        self._queue_host = (True, filled)

    def param_groups(self) -> list[dict]:
        """Groups ``encoder`` (backbone + projector) and ``prototypes``, trainable only."""
        return nonempty(param_group("encoder", (self.backbone, self.projector)),
                        param_group("prototypes", (self.prototypes,)))

    @torch.no_grad()
    def on_step_end(self, step: int, total_steps: int) -> None:
        """Unfreeze the prototypes once ``step + 1 >= freeze_prototypes_steps`` steps are done;
        start filling the queue once ``step + 1 >= queue_start_steps``."""
        self.prototype_grad_scale.fill_(1.0 if step + 1 >= self.freeze_prototypes_steps else 0.0)
        if self.queue_length and step + 1 >= self.queue_start_steps:
            filling, rows = self._queue_state()
            if not filling:
                self.queue_filling.fill_(1)
                self._queue_host = (True, rows)
