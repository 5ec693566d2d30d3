"""Pure-torch models: VRT backbone, spike branch, fusion and VRTWithSpike."""
from vrt_spike.models.vrt import VRT

__all__ = ["VRT"]
