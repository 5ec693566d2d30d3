"""The training progress bar: Lightning's, with the loss read when the bar refreshes."""
from __future__ import annotations

from typing import Any

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import TQDMProgressBar

__all__ = ["LossProgressBar"]


class LossProgressBar(TQDMProgressBar):
    """``TQDMProgressBar`` plus ``loss`` (the last logged ``train/loss``).

    The loss is logged without ``prog_bar=True``: Lightning turns every progress-bar value into a
    Python number after each batch, a host sync per training step. Read here, it costs one sync
    per refresh (``refresh_rate`` batches).
    """

    def get_metrics(self, trainer: Trainer, pl_module: LightningModule) -> dict[str, Any]:
        items = super().get_metrics(trainer, pl_module)
        loss = trainer.callback_metrics.get("train/loss")
        if loss is not None:
            items["loss"] = f"{float(loss):.4g}"
        return items
