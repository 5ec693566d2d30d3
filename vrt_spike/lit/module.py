"""`DeblurModule`: the LightningModule around VRTWithSpike, and `build_net` shared with the benchmark."""
from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.distributed as dist
from einops import rearrange
from lightning.fabric.utilities.seed import seed_everything
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure
from torchmetrics.image import PeakSignalNoiseRatio, StructuralSimilarityIndexMeasure

from vrt_spike.atomic import atomic_path
from vrt_spike.lit.losses import RestorationLoss
from vrt_spike.lit.optim import NonFiniteStepGuard, build_optimizer, build_scheduler, split_param_groups
from vrt_spike.restore import restore_clip

__all__ = ["TRAINING_KEYS", "COMPILE_MODES", "build_net", "DeblurModule"]

log = logging.getLogger(__name__)

# model.* keys read by the LightningModule, not by VRTWithSpike.
TRAINING_KEYS = ("compile", "compile_mode", "pretrained", "freeze_backbone_steps")
# torch.compile modes: default (fused kernels), reduce-overhead (+ CUDA graphs: launch cost gone,
# static shapes and memory held per shape), max-autotune (+ kernel autotuning: minutes up front).
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune")


def _plain(cfg: Mapping[str, Any] | DictConfig | None) -> dict[str, Any]:
    if cfg is None:
        return {}
    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    return dict(cfg)


def build_net(model_cfg: Mapping[str, Any]) -> nn.Module:
    """``model.*`` config -> :class:`VRTWithSpike` (training-side keys dropped, nothing loaded)."""
    from vrt_spike.models.vrt_with_spike import VRTWithSpike

    kwargs = {k: v for k, v in _plain(model_cfg).items() if k not in TRAINING_KEYS and k != "_target_"}
    return VRTWithSpike(**kwargs)


def _frames(x: Tensor) -> Tensor:
    return rearrange(x, "b t c h w -> (b t) c h w")


FRAME_METRICS = ("psnr", "ssim", "psnr_input", "psnr_spike_floor")


def score_frames(pred: Tensor, batch: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per frame of ``pred (B, T, 3, H, W)``: clip, frame, PSNR/SSIM against ``batch['sharp']``,
    the blurry input's PSNR and, when the batch carries it, the spike floor's PSNR."""
    b, t = pred.shape[:2]
    sharp = _frames(batch["sharp"])
    psnr = peak_signal_noise_ratio(_frames(pred.float()), sharp, data_range=1.0, reduction="none", dim=(1, 2, 3))
    ssim = structural_similarity_index_measure(_frames(pred.float()), sharp, data_range=1.0, reduction="none")
    refs = {"psnr_input": batch["blur"], "psnr_spike_floor": batch.get("spike_floor")}
    ref_psnr = {k: peak_signal_noise_ratio(_frames(v), sharp, data_range=1.0, reduction="none", dim=(1, 2, 3)).tolist()
                for k, v in refs.items() if v is not None}
    psnr, ssim = psnr.tolist(), ssim.tolist()
    rows = []
    for i in range(b * t):
        s, f = divmod(i, t)
        rows.append({"clip": batch["clip"][s], "frame": int(batch["frame_start"][s]) + f, "psnr": psnr[i],
                     "ssim": ssim[i], **{k: v[i] for k, v in ref_psnr.items()}})
    return rows


def summarise_frames(frames: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """Per-frame rows -> per-clip means (sorted by clip) and the mean over all frames."""
    metrics = [m for m in FRAME_METRICS if frames and m in frames[0]]
    by_clip: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in frames:
        by_clip[r["clip"]].append(r)
    clips = [{"clip": clip, "frames": len(rs), **{m: sum(r[m] for r in rs) / len(rs) for m in metrics}}
             for clip, rs in sorted(by_clip.items())]
    n = max(1, len(frames))
    return clips, {m: sum(r[m] for r in frames) / n for m in metrics}


class DeblurModule(L.LightningModule):
    """Trains and evaluates a spike-guided deblurring network.

    Args:
        model: the ``model.*`` config (VRTWithSpike kwargs plus ``compile``, ``compile_mode``
            (one of :data:`COMPILE_MODES`), ``pretrained``, ``freeze_backbone_steps``).
        optim: ``optim.*`` (see :func:`vrt_spike.lit.optim.build_optimizer`) plus
            ``flow_freeze_steps``.
        scheduler: ``scheduler.*`` (``warmup_steps``, ``min_lr_ratio``).
        loss: :class:`~vrt_spike.lit.losses.RestorationLoss` kwargs.
        max_nonfinite_steps: abort after this many steps in a row whose gradients were not finite
            (each one is skipped on the device, on every rank alike); checked at the logging
            interval (``trainer.log_every_n_steps``), so the host never waits inside a step.
        seed: reseeds every RNG with ``seed + epoch`` at each training epoch start, so a run
            resumed from an epoch-boundary checkpoint draws the same crops and augmentations.
        log_images: save (and send to W&B) one blur | restored | sharp frame per validation.
        tile: tiled val/test inference, :func:`~vrt_spike.models.vrt.tiling.tiled_forward` kwargs
            (``tile: [T, H, W]``, ``tile_overlap: [T, H, W]``), or None for whole frames.
        zero_init_output: zero VRT's last convolution so training starts from output = input.
        net: an already built network (evaluation of an official checkpoint); default: built from ``model``.
    """

    def __init__(self, model: Mapping[str, Any], optim: Mapping[str, Any], scheduler: Mapping[str, Any] | None = None,
                 loss: Mapping[str, Any] | None = None, max_nonfinite_steps: int = 10, seed: int | None = None,
                 log_images: bool = True, tile: Mapping[str, Any] | None = None, zero_init_output: bool = False,
                 net: nn.Module | None = None) -> None:
        super().__init__()
        model, optim = _plain(model), _plain(optim)
        scheduler, loss, tile = _plain(scheduler), _plain(loss), _plain(tile) or None
        self.save_hyperparameters({"model": model, "optim": optim, "scheduler": scheduler, "loss": loss,
                                   "max_nonfinite_steps": max_nonfinite_steps, "seed": seed,
                                   "log_images": log_images, "tile": tile, "zero_init_output": zero_init_output})
        if max_nonfinite_steps < 1:
            raise ValueError(f"max_nonfinite_steps must be >= 1, got {max_nonfinite_steps}")
        self.net = net if net is not None else build_net(model)
        if net is None and zero_init_output:
            # VRT adds its output to the blurry input: a zero last conv starts from the identity
            # (the input's PSNR) instead of a random residual, as a pretrained backbone would.
            nn.init.zeros_(self.net.vrt.conv_last.weight)
            nn.init.zeros_(self.net.vrt.conv_last.bias)
        if net is None and model.get("pretrained"):
            self.net.load_backbone_checkpoint(model["pretrained"])
        self.use_spike = bool(getattr(self.net, "use_spike", True))
        mode = model.get("compile_mode", "default")
        if mode not in COMPILE_MODES:
            raise ValueError(f"model.compile_mode: expected one of {list(COMPILE_MODES)}, got {mode!r}")
        if model.get("compile"):
            # In place: the module keeps its own parameters and state_dict keys, so checkpoints of
            # compiled and eager runs load into each other. Static shapes: a training crop, a
            # validation frame and an inference tile each compile once, and the step stays
            # CUDA-graph friendly (reduce-overhead).
            self.net.compile(mode=mode, dynamic=False)
        self.loss_fn = RestorationLoss(**loss)
        self.val_psnr = PeakSignalNoiseRatio(data_range=1.0, dim=(1, 2, 3))
        self.val_ssim = StructuralSimilarityIndexMeasure(data_range=1.0)
        self.val_psnr_input = PeakSignalNoiseRatio(data_range=1.0, dim=(1, 2, 3))
        self.val_psnr_floor = PeakSignalNoiseRatio(data_range=1.0, dim=(1, 2, 3))
        self.val_frames_scored = 0  # frames of the last validation (the verdict names them)
        self._nonfinite = NonFiniteStepGuard()
        self._frozen_for_steps: list[tuple[int, list[nn.Parameter]]] = []  # set by setup("fit")
        self._skipped_reported = 0
        self._test_rows: list[dict[str, Any]] = []
        # The split a test run scores, the prefix of the figures on_test_epoch_end logs: test
        # (train.py's test=true); evaluate.py split=val sets val, so val figures never read as test ones.
        self.scored_split = "test"
        self.test_frames: list[dict[str, Any]] = []
        self.test_clips: list[dict[str, Any]] = []

    # ------------------------------------------------------------------ forward

    def forward(self, blur: Tensor, spike: Tensor | None = None) -> Tensor:
        """``blur (B, T, 3, H, W)``, ``spike (B, T, K, H, W)`` -> restored ``(B, T, 3, H, W)``."""
        return self.net(blur, spike if self.use_spike else None)

    def restore(self, blur: Tensor, spike: Tensor | None = None) -> Tensor:
        """Whole-clip inference (val, test, evaluate.py, predict.py), tiled as ``tile`` says.

        ``blur (B, T, 3, H, W)`` and ``spike (B, T, K, H, W)`` of any T and size -> ``(B, T, 3, H, W)``.
        """
        return restore_clip(self, self.net, blur, spike if self.use_spike else None, self.hparams.tile)

    def _restore(self, batch: Mapping[str, Any]) -> Tensor:
        return self.restore(batch["blur"], batch.get("spike"))

    # ------------------------------------------------------------------ training

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> Tensor:
        pred = self(batch["blur"], batch["spike"])
        loss = self.loss_fn(pred, batch["sharp"])
        # Not on the progress bar: Lightning turns every prog_bar value into a Python number after
        # each batch (a host sync per step); loggers read it at their interval, the bar at its refresh.
        self.log("train/loss", loss.detach(), batch_size=pred.shape[0])
        return loss

    @property
    def skipped_steps(self) -> int:
        """Optimizer steps skipped so far for non-finite gradients (a host read: not for the step)."""
        return self._nonfinite.counts()[0]

    def _check_nonfinite(self, log_count: bool = True) -> None:
        """At the logging interval: log the skipped steps, abort after ``max_nonfinite_steps`` in a row."""
        skipped, longest = self._nonfinite.counts()
        if log_count:
            self.log("train/skipped_steps", float(skipped))
        limit = self.hparams.max_nonfinite_steps
        if longest >= limit:
            raise RuntimeError(f"{longest} non-finite losses in a row (max_nonfinite_steps={limit}) by step "
                               f"{self.global_step} ({skipped} steps skipped in all): lower optim.lr, enable "
                               "trainer.gradient_clip_val, or use bf16-mixed instead of 16-mixed")
        if skipped > self._skipped_reported:
            self._skipped_reported = skipped
            log.warning("%d optimizer step(s) skipped so far for non-finite gradients (by step %d; limit "
                        "max_nonfinite_steps=%d in a row)", skipped, self.global_step, limit)

    def setup(self, stage: str) -> None:
        # The one freezing path (KAIR's fix_iter): a part frozen for the whole fit needs no
        # gradient at all, so it gets requires_grad=False here, before the strategy wraps the
        # model (DDP then leaves it out of its buckets) and before the optimizer is built (no
        # group for it), which skips its backward; a part frozen for the first steps only keeps
        # its gradients, dropped before each of those optimizer steps (on_before_optimizer_step),
        # so DDP's buckets never change mid-fit.
        if stage == "fit":
            self.freeze_for_fit(int(self.trainer.max_steps))

    def freeze_for_fit(self, max_steps: int) -> None:
        """Apply the freezes to a fit of ``max_steps`` steps (see :meth:`setup`; the memory plan calls it too)."""
        self._frozen_for_steps = []
        for steps, params in self._freezes():
            if 0 < max_steps <= steps:
                for p in params:
                    p.requires_grad_(False)
            elif steps > 0:
                self._frozen_for_steps.append((steps, params))

    def _freezes(self) -> list[tuple[int, list[nn.Parameter]]]:
        """``(steps, parameters)`` of each freeze: the flow group (SpyNet and the alignment's
        deformable convolutions, ``optim.flow_keys``) for ``optim.flow_freeze_steps``, the VRT
        backbone for ``model.freeze_backbone_steps``."""
        optim, model = self.hparams.optim, self.hparams.model
        flow = [p for _, p in split_param_groups(self.net, list(optim.get("flow_keys") or []))["flow"]]
        freezes = [(int(optim.get("flow_freeze_steps", 0) or 0), flow)]
        if hasattr(self.net, "vrt"):  # a network passed as `net` need not be a VRTWithSpike
            freezes.append((int(model.get("freeze_backbone_steps", 0) or 0), list(self.net.vrt.parameters())))
        return freezes

    def on_train_start(self) -> None:
        # A run resumed from a checkpoint saved at an epoch's last batch restarts "mid-epoch" and
        # Lightning skips on_train_epoch_start for that first epoch: seed it here as well.
        self._seed_epoch()

    def on_train_epoch_start(self) -> None:
        self._seed_epoch()

    def _seed_epoch(self) -> None:
        if self.hparams.seed is not None:
            seed_everything(int(self.hparams.seed) + self.current_epoch, workers=True, verbose=False)

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.global_step % self.trainer.log_every_n_steps == 0:
            self._check_nonfinite()

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        # Frozen for the first steps (see setup): the gradients are dropped after the DDP
        # all-reduce, on every rank alike, so the optimizer skips those parameters entirely (no
        # update, no decay, no moment update), as KAIR's requires_grad=False would.
        for steps, params in self._frozen_for_steps:
            if self.global_step < steps:
                for p in params:
                    p.grad = None
        # A GradScaler (16-mixed) skips overflowing steps itself and would count as non-finite here.
        if getattr(self.trainer.precision_plugin, "scaler", None) is None:
            self._nonfinite.before_step(optimizer)

    def on_train_end(self) -> None:
        self._check_nonfinite(log_count=False)  # Lightning takes no logs here

    def configure_optimizers(self) -> dict[str, Any]:
        optimizer = build_optimizer(self.net, self.hparams.optim)
        total = int(self.trainer.estimated_stepping_batches)
        scheduler = build_scheduler(optimizer, self.hparams.scheduler, total)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # ------------------------------------------------------------------ validation

    def on_validation_start(self) -> None:
        self.val_frames_scored = 0

    def validation_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        pred = self._restore(batch).clamp(0, 1)
        sharp, blur = _frames(batch["sharp"]), _frames(batch["blur"])
        out = _frames(pred.float())
        self.val_psnr(out, sharp)
        self.val_ssim(out, sharp)
        self.val_psnr_input(blur, sharp)
        n = out.shape[0]
        self.val_frames_scored += n
        self.log("val/psnr", self.val_psnr, prog_bar=True, batch_size=n)
        self.log("val/ssim", self.val_ssim, batch_size=n)
        self.log("val/psnr_input", self.val_psnr_input, batch_size=n)
        if batch.get("spike_floor") is not None:  # the same frames, read by the non-learned formula
            self.val_psnr_floor(_frames(batch["spike_floor"]), sharp)
            self.log("val/psnr_spike_floor", self.val_psnr_floor, batch_size=n)
        if batch_idx == 0 and self.hparams.log_images and not self.trainer.sanity_checking:
            self._log_images(batch, pred)

    def _log_images(self, batch: Mapping[str, Any], pred: Tensor) -> None:
        """One full frame per validation: blur | spike floor | restored | sharp, shown 2x (nearest)."""
        if self.global_rank != 0:
            return
        from torchvision.utils import save_image

        t = pred.shape[1] // 2
        panels = {"blur": batch["blur"][0, t], "spike floor": batch.get("spike_floor"),
                  "restored": pred[0, t].float(), "sharp": batch["sharp"][0, t]}
        if panels["spike floor"] is not None:
            panels["spike floor"] = panels["spike floor"][0, t]
        panels = {k: v for k, v in panels.items() if v is not None}
        row = torch.nn.functional.interpolate(torch.stack(list(panels.values())).cpu().float(), scale_factor=2,
                                              mode="nearest")
        path = Path(self.trainer.default_root_dir) / "images" / f"val_step{self.global_step:07d}.png"
        with atomic_path(path) as tmp:
            save_image(row, tmp, nrow=len(panels), padding=4, pad_value=1.0)
        caption = f"{batch['clip'][0]} frame {int(batch['frame_start'][0]) + t}: {' | '.join(panels)}"
        for logger in self.loggers:
            if hasattr(logger, "log_image"):
                logger.log_image("val/restored", [str(path)], step=self.global_step, caption=[caption])

    # ------------------------------------------------------------------ test (per clip)

    def on_test_epoch_start(self) -> None:
        self._test_rows = []

    def test_step(self, batch: Mapping[str, Any], batch_idx: int) -> Tensor:
        """Per-frame PSNR/SSIM rows; returns the restored clip (callbacks save it as PNG)."""
        pred = self._restore(batch).clamp(0, 1).float()
        self._test_rows += score_frames(pred, batch)
        return pred

    def on_test_epoch_end(self) -> None:
        """Gathers every rank's rows and logs their means as ``<scored_split>/<metric>``."""
        rows = self._test_rows
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            gathered: list[list[dict[str, Any]]] = [[] for _ in range(dist.get_world_size())]
            dist.all_gather_object(gathered, rows)
            rows = [r for part in gathered for r in part]
        # DistributedSampler pads the last shard with repeats: keep one row per (clip, frame).
        unique = {(r["clip"], r["frame"]): r for r in rows}
        self.test_frames = [unique[k] for k in sorted(unique)]
        self.test_clips, mean = summarise_frames(self.test_frames)
        for m, value in mean.items():
            self.log(f"{self.scored_split}/{m}", value, sync_dist=False, rank_zero_only=True)
