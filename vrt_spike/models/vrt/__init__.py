"""VRT backbone, checkpoint-compatible with the official release (JingyunLiang/VRT)."""
from vrt_spike.models.vrt.checkpoint import load_spynet_weights, load_vrt_checkpoint
from vrt_spike.models.vrt.tiling import tiled_forward
from vrt_spike.models.vrt.vrt import VRT, StageHook

__all__ = ["VRT", "StageHook", "load_vrt_checkpoint", "load_spynet_weights", "tiled_forward"]
