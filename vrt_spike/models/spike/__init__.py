"""Spike branch: SpikeEncoder3D (3-D conv pyramid), SpikeTemporalSA (attention along time) and
SpikeRefineHead (scale-1 features straight to the output)."""
from vrt_spike.models.spike.encoder import ResidualBlock3D, SpikeEncoder3D
from vrt_spike.models.spike.head import SpikeRefineHead
from vrt_spike.models.spike.temporal_sa import SpikeTemporalSA, TemporalSelfAttentionBlock

__all__ = ["ResidualBlock3D", "SpikeEncoder3D", "SpikeRefineHead", "SpikeTemporalSA", "TemporalSelfAttentionBlock"]
