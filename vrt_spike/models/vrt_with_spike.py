"""VRTWithSpike: VRT video deblurring guided by a spike-camera stream.

spike ``(B, T, K, H, W)`` -> SpikeEncoder3D -> SpikeTemporalSA -> ``[Fs1'..Fs4']``; the RGB clip
runs through VRT and, right after each stage ``i`` in ``fuse_stages``, its feature queries
``Fs_i'`` (MultiScaleTemporalCrossAttnFuse) through VRT's ``stage_hook``.

Two short paths from the spikes to the output (both switchable; see ``docs/PERFORMANCE.md`` for
why the fusion alone learns too late): VRT's residual can be added to S-SDM's non-learned spike
reading of the frames instead of the blurry input (``residual_base="sdm"``), and a spike head
adds a correction read straight from the full-resolution spike features (``spike_head=True``).
"""
from __future__ import annotations

import inspect
import os
from collections.abc import Mapping, Sequence
from typing import Any

from torch import Tensor, nn

from vrt_spike.models.fusion import MultiScaleTemporalCrossAttnFuse
from vrt_spike.models.spike import SpikeEncoder3D, SpikeRefineHead, SpikeTemporalSA
from vrt_spike.models.spike_floor import sdm, window_weights
from vrt_spike.models.vrt import VRT
from vrt_spike.models.vrt.checkpoint import load_vrt_checkpoint

# VRT stages 1-4 run at 1, 1/2, 1/4, 1/8 of the input: the spike pyramid must downsample alike.
_VRT_SPATIAL_STRIDES = [2, 2, 2]
RESIDUAL_BASES = ("blur", "sdm")


def _vrt_default(name: str) -> Any:
    return inspect.signature(VRT).parameters[name].default


class VRTWithSpike(nn.Module):
    """VRT with spike features fused after the chosen stages 1-4.

    Args:
        vrt: official VRT keyword arguments.
        spike_encoder / spike_tsa / fusion: keyword arguments of :class:`SpikeEncoder3D`,
            :class:`SpikeTemporalSA`, :class:`MultiScaleTemporalCrossAttnFuse`.
            ``channels_per_scale`` defaults to VRT's stage 1-4 widths (``embed_dims[:4]``) and
            must equal them when given; the encoder's ``in_channels`` is ``num_bins``.
        num_bins: K channels of the spike representation (voxel bins: equal consecutive
            sub-windows of each frame's exposure).
        use_spike: False builds the plain backbone (no spike modules; ``spike`` is ignored).
        fuse_stages: VRT stages (1..4) followed by a fusion block.
        residual_base: what VRT's residual is added to: ``blur`` (official VRT; a pretrained
            backbone is unchanged at step 0) or ``sdm`` (S-SDM's ``blur * short / long``
            spike-rate ratio of the voxels, :func:`vrt_spike.models.spike_floor.sdm`).
        sharp_instant, sharp_width: the short window of ``sdm``, as fractions of the exposure
            (where the ground truth sits; see :mod:`vrt_spike.models.spike_floor`).
        spike_head: add :class:`SpikeRefineHead` (of the scale-1 spike features, the blur and the
            residual base) to the output: a bool, or ``{enabled, width, depth}``.
    """

    def __init__(
        self,
        vrt: Mapping[str, Any],
        spike_encoder: Mapping[str, Any] | None = None,
        spike_tsa: Mapping[str, Any] | None = None,
        fusion: Mapping[str, Any] | None = None,
        *,
        num_bins: int,
        use_spike: bool = True,
        fuse_stages: Sequence[int] = (1, 2, 3, 4),
        residual_base: str = "blur",
        sharp_instant: float = 0.5,
        sharp_width: float = 0.125,
        spike_head: bool | Mapping[str, Any] = False,
    ) -> None:
        super().__init__()
        self.vrt = VRT(**dict(vrt))
        self.use_spike = bool(use_spike)
        self.num_bins = int(num_bins)
        self.fuse_stages = tuple(int(s) for s in fuse_stages)
        if residual_base not in RESIDUAL_BASES:
            raise ValueError(f"model.residual_base must be one of {RESIDUAL_BASES}, got {residual_base!r}")
        # Without spikes there is nothing but the blur to add the residual to.
        self.residual_base = residual_base if self.use_spike else "blur"
        self.sharp_window = (float(sharp_instant), float(sharp_width))
        if not self.use_spike:
            return
        if self.num_bins < 1:
            raise ValueError(f"model.num_bins must be >= 1, got {num_bins}")
        # The short window's bin weights: a constant of the model (a buffer follows the module
        # to its device), so no forward builds a tensor from host values.
        self.register_buffer("sdm_weights", window_weights(self.num_bins, *self.sharp_window), persistent=False)
        if not self.fuse_stages:
            raise ValueError("model.fuse_stages is empty while model.use_spike=true: nothing would use the spikes")
        if len(set(self.fuse_stages)) != len(self.fuse_stages) or not set(self.fuse_stages) <= {1, 2, 3, 4}:
            raise ValueError(f"model.fuse_stages must be distinct VRT stages in 1..4, got {list(self.fuse_stages)}")

        embed_dims = list(vrt.get("embed_dims", _vrt_default("embed_dims")))
        channels = [int(c) for c in embed_dims[:4]]
        modules = {"spike_encoder": dict(spike_encoder or {}), "spike_tsa": dict(spike_tsa or {}),
                   "fusion": dict(fusion or {})}
        for key, kwargs in modules.items():
            given = kwargs.pop("channels_per_scale", None)
            if given is not None and [int(c) for c in given] != channels:
                raise ValueError(
                    f"model.{key}.channels_per_scale={list(given)} does not match VRT's stage 1-4 widths "
                    f"model.vrt.embed_dims[:4]={channels}; set it to {channels} or drop it (it defaults to them)")
        enc = modules["spike_encoder"]
        if "in_channels" in enc and int(enc["in_channels"]) != self.num_bins:
            raise ValueError(f"model.spike_encoder.in_channels={enc['in_channels']} != model.num_bins={self.num_bins}")
        enc.pop("in_channels", None)
        strides = [int(s) for s in enc.get("spatial_strides", _VRT_SPATIAL_STRIDES)]
        if strides != _VRT_SPATIAL_STRIDES:
            raise ValueError(
                f"model.spike_encoder.spatial_strides={strides} must be {_VRT_SPATIAL_STRIDES}: spike scales have "
                "to sit on VRT stages 1-4 (1, 1/2, 1/4, 1/8 resolution)")
        for key, derived in (("spike_encoder", "num_scales"), ("spike_tsa", "scales"), ("fusion", "fuse_stages")):
            if derived in modules[key]:
                raise ValueError(f"model.{key}.{derived} is derived from model.fuse_stages; set model.fuse_stages instead")

        # Only the scales some fusion reads are built: no dead parameters, no wasted compute.
        self.spike_encoder = SpikeEncoder3D(self.num_bins, channels, num_scales=max(self.fuse_stages), **enc)
        self.spike_tsa = SpikeTemporalSA(channels, scales=self.fuse_stages, **modules["spike_tsa"])
        self.fusion = MultiScaleTemporalCrossAttnFuse(channels, self.fuse_stages, **modules["fusion"])
        head = dict(spike_head) if isinstance(spike_head, Mapping) else {"enabled": bool(spike_head)}
        self.spike_head = (SpikeRefineHead(channels[0], out_chans=int(vrt.get("out_chans", 3)), **head)
                           if head.pop("enabled", True) else None)

    # ------------------------------------------------------------------ forward

    def _check_inputs(self, rgb: Tensor, spike: Tensor | None) -> None:
        if rgb.ndim != 5:
            raise ValueError(f"rgb must be (B, T, 3, H, W), got {tuple(rgb.shape)}")
        if spike is None:
            raise ValueError(f"model.use_spike=true needs a spike tensor (B, T, K={self.num_bins}, H, W) "
                             f"for rgb {tuple(rgb.shape)}, got None")
        b, t, _, h, w = rgb.shape
        expected = (b, t, self.num_bins, h, w)
        if spike.ndim != 5 or tuple(spike.shape) != expected:
            raise ValueError(f"spike must be (B, T, K, H, W) = {expected} (rgb {tuple(rgb.shape)}, "
                             f"num_bins={self.num_bins}), got {tuple(spike.shape)}")

    def forward(self, rgb: Tensor, spike: Tensor | None = None) -> Tensor:
        """``rgb (B, T, 3, H, W)``, ``spike (B, T, K, H, W)`` in [0, 1] -> ``(B, T, 3, H, W)``."""
        if not self.use_spike:
            return self.vrt(rgb)
        self._check_inputs(rgb, spike)
        spike_feats = self.spike_tsa(self.spike_encoder(spike))

        def fuse(stage: int, feat: Tensor) -> Tensor:
            if stage not in self.fuse_stages:
                return feat
            return self.fusion(feat, spike_feats[stage - 1], stage=stage)

        base = self.spike_prior(rgb, spike) if self.residual_base == "sdm" else None
        out = self.vrt(rgb, stage_hook=fuse, residual_base=base)
        if self.spike_head is not None:
            out = out + self.spike_head(spike_feats[0], rgb, rgb if base is None else base)
        return out

    def spike_prior(self, rgb: Tensor, spike: Tensor) -> Tensor:
        """S-SDM's reading of the voxels: ``rgb (B, T, 3, H, W)``, ``spike (B, T, K, H, W)`` -> rgb's shape."""
        return sdm(rgb, spike, self.sdm_weights).to(rgb.dtype)

    # ------------------------------------------------------------------ loading

    def load_backbone_checkpoint(self, path: str | os.PathLike) -> None:
        """Load an official VRT release into ``vrt`` (strict); spike modules keep their fresh init."""
        load_vrt_checkpoint(self.vrt, path)
