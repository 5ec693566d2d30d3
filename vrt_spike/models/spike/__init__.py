"""Spike branch: SpikeEncoder3D (3-D conv pyramid) and SpikeTemporalSA (attention along time)."""
from vrt_spike.models.spike.encoder import ResidualBlock3D, SpikeEncoder3D
from vrt_spike.models.spike.temporal_sa import SpikeTemporalSA, TemporalSelfAttentionBlock

__all__ = ["ResidualBlock3D", "SpikeEncoder3D", "SpikeTemporalSA", "TemporalSelfAttentionBlock"]
