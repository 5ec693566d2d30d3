"""VRT+Spike: spike-guided video deblurring."""
