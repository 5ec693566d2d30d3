"""Dense peak throughput of common GPUs, for model FLOPs utilisation (MFU).

Figures are the vendors' datasheet / architecture-whitepaper numbers in TFLOPS, *dense* (the
datasheets' "with sparsity" figures halved), tensor-core rates with FP32 accumulation (what
PyTorch's matmuls use; GeForce cards run FP16/BF16 with FP32 accumulation at half their FP16-
accumulate rate). `None` means the card has no tensor-core path for that type. Override with
`bench.peak_tflops=<number>` for any card not listed, other clocks, or a CPU.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import torch

COMPUTE_DTYPES = ("fp32", "tf32", "bf16", "fp16")


@dataclass(frozen=True)
class DevicePeak:
    """Dense peak TFLOPS per compute type for one device model."""

    name: str
    fp32: float
    tf32: float | None
    bf16: float | None
    fp16: float | None
    source: str

    def tflops(self, compute_dtype: str) -> float | None:
        if compute_dtype not in COMPUTE_DTYPES:
            raise ValueError(f"compute dtype must be one of {COMPUTE_DTYPES}, got {compute_dtype!r}")
        return getattr(self, compute_dtype)


_HOPPER = "NVIDIA H100/H200 datasheets (sparsity figures halved)"
_AMPERE_DC = "NVIDIA A100/A40/A10 datasheets (sparsity figures halved)"
_AMPERE_GA102 = "NVIDIA Ampere GA102 whitepaper, appendix A"
_ADA = "NVIDIA Ada (AD102) whitepaper / L40S, L40, L4 datasheets (sparsity figures halved)"
_VOLTA_TURING = "NVIDIA V100 / T4 datasheets"

# (pattern on torch.cuda.get_device_name(), peak). First match wins: specific variants first.
PEAK_TABLE: tuple[tuple[str, DevicePeak], ...] = (
    (r"GH200", DevicePeak("GH200 (H100 SXM class)", 67.0, 494.7, 989.4, 989.4, _HOPPER)),
    (r"H100.*NVL", DevicePeak("H100 NVL", 60.0, 417.5, 835.5, 835.5, _HOPPER)),
    (r"H100.*PCIe", DevicePeak("H100 PCIe", 51.0, 378.0, 756.5, 756.5, _HOPPER)),
    (r"H100", DevicePeak("H100 SXM", 67.0, 494.7, 989.4, 989.4, _HOPPER)),
    (r"H200.*NVL", DevicePeak("H200 NVL", 60.0, 417.5, 835.5, 835.5, _HOPPER)),
    (r"H200", DevicePeak("H200 SXM", 67.0, 494.7, 989.4, 989.4, _HOPPER)),
    (r"A100", DevicePeak("A100", 19.5, 156.0, 312.0, 312.0, _AMPERE_DC)),
    (r"\bA40\b", DevicePeak("A40", 37.4, 74.8, 149.7, 149.7, _AMPERE_DC)),
    (r"\bA10\b", DevicePeak("A10", 31.2, 62.5, 125.0, 125.0, _AMPERE_DC)),
    (r"RTX A6000", DevicePeak("RTX A6000", 38.7, 77.4, 154.8, 154.8, _AMPERE_GA102)),
    (r"RTX 3090(?! Ti)", DevicePeak("GeForce RTX 3090", 35.6, 35.6, 71.0, 71.0, _AMPERE_GA102)),
    (r"L40S", DevicePeak("L40S", 91.6, 183.0, 362.05, 362.05, _ADA)),
    (r"\bL40\b", DevicePeak("L40", 90.5, 90.5, 181.05, 181.05, _ADA)),
    (r"\bL4\b", DevicePeak("L4", 30.3, 60.0, 121.0, 121.0, _ADA)),
    (r"RTX 4090", DevicePeak("GeForce RTX 4090", 82.6, 82.6, 165.2, 165.2, _ADA)),
    (r"V100.*PCIE", DevicePeak("V100 PCIe", 14.0, None, None, 112.0, _VOLTA_TURING)),
    (r"V100", DevicePeak("V100 SXM2", 15.7, None, None, 125.0, _VOLTA_TURING)),
    (r"\bT4\b", DevicePeak("T4", 8.1, None, None, 65.0, _VOLTA_TURING)),
)


def lookup_peak(device_name: str) -> DevicePeak | None:
    """The table entry whose pattern matches `device_name` (case-insensitive), else None."""
    for pattern, peak in PEAK_TABLE:
        if re.search(pattern, device_name, flags=re.IGNORECASE):
            return peak
    return None


def compute_dtype_for(precision: str | int, float32_matmul_precision: str | None = None) -> str:
    """The tensor-core type a Lightning `trainer.precision` runs its matmuls in.

    `32`/`32-true` counts as TF32 when `torch.set_float32_matmul_precision` is "high" or "medium"
    (matmuls may use TF32), else FP32.
    """
    p = str(precision)
    if p in ("bf16-mixed", "bf16-true", "bf16"):
        return "bf16"
    if p in ("16-mixed", "16-true", "16"):
        return "fp16"
    if p in ("32", "32-true"):
        mm = float32_matmul_precision or torch.get_float32_matmul_precision()
        return "fp32" if mm == "highest" else "tf32"
    raise ValueError(
        f"trainer.precision: expected one of 32, 32-true, 16-mixed, 16-true, bf16-mixed, "
        f"bf16-true; got {precision!r}"
    )


@dataclass(frozen=True)
class ResolvedPeak:
    """The peak used for MFU and where it came from ("table: H100 SXM bf16", "override", ...)."""

    tflops: float | None
    source: str


def resolve_peak(device: torch.device, compute_dtype: str,
                 override_tflops: float | None = None) -> ResolvedPeak:
    """Peak TFLOPS for MFU: the override if given, else the table entry for a CUDA device.

    CPUs and unknown GPUs give `tflops=None` (MFU reported as n/a) unless overridden.
    """
    if override_tflops is not None:
        if not override_tflops > 0:
            raise ValueError(f"bench.peak_tflops must be > 0, got {override_tflops!r}")
        return ResolvedPeak(float(override_tflops), "override (bench.peak_tflops)")
    if device.type != "cuda":
        return ResolvedPeak(None, f"n/a on {device.type} (set bench.peak_tflops to get MFU)")
    name = torch.cuda.get_device_name(device)
    peak = lookup_peak(name)
    if peak is None:
        return ResolvedPeak(None, f"n/a: {name!r} not in the peak table (set bench.peak_tflops)")
    tflops = peak.tflops(compute_dtype)
    if tflops is None:
        return ResolvedPeak(None, f"n/a: {peak.name} has no {compute_dtype} tensor-core peak")
    return ResolvedPeak(tflops, f"table: {peak.name} dense {compute_dtype}")


def mfu(flops: int | float, seconds: float, peak_tflops: float | None) -> float | None:
    """Achieved FLOP/s over the peak, in [0, 1] for a sane measurement; None without a peak."""
    if peak_tflops is None:
        return None
    if seconds <= 0:
        raise ValueError(f"MFU needs a positive time, got {seconds!r} s")
    return float(flops) / seconds / (peak_tflops * 1e12)
