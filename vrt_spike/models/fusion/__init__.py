"""Cross-modal fusion of VRT stage features with spike features."""
from vrt_spike.models.fusion.cross_attn import MultiScaleTemporalCrossAttnFuse, TemporalCrossAttnFuse

__all__ = ["MultiScaleTemporalCrossAttnFuse", "TemporalCrossAttnFuse"]
