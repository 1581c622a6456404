"""The momentum encoder shared by MoCo (He et al., CVPR 2020) and BYOL (Grill et al., NeurIPS
2020): after every optimiser step, ``copy = m * copy + (1 - m) * online`` for the backbone and the
projection head (lightly's ``update_momentum``), ``m`` constant or following lightly's
``cosine_schedule`` from ``cfg.momentum`` to 1 over training (``cfg.momentum_schedule``)."""

from __future__ import annotations

import torch
from lightly.models.utils import update_momentum
from lightly.utils.scheduler import cosine_schedule

__all__ = ["MomentumEncoderMixin"]


class MomentumEncoderMixin:
    """For an :class:`~ssl_ft.methods.SSLMethod` with ``backbone``/``projection_head`` and their
    momentum copies ``backbone_momentum``/``projection_head_momentum``; ``last_momentum`` is the
    ``m`` of the latest update (logged)."""

    def momentum_at(self, step: int, total_steps: int) -> float:
        """The momentum after optimiser step ``step`` (0-based) of ``total_steps``."""
        if self.cfg.momentum_schedule and total_steps > 0:
            return cosine_schedule(min(step, total_steps), total_steps, self.cfg.momentum, 1.0)
        return float(self.cfg.momentum)

    @torch.no_grad()
    def after_step(self, step: int, total_steps: int) -> None:
        """``copy = m * copy + (1 - m) * online`` for the backbone and the projection head."""
        m = self.momentum_at(step, total_steps)
        update_momentum(self.backbone, self.backbone_momentum, m)
        update_momentum(self.projection_head, self.projection_head_momentum, m)
        self.last_momentum = m
