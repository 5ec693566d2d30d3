"""Pure-torch models: VRT backbone, spike branch, fusion and VRTWithSpike."""
