"""Pure-torch models: the VRT backbone, the spike branch and their fusion."""
from vrt_spike.models.vrt import VRT

__all__ = ["VRT"]
