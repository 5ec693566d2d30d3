"""The end-of-run report: the verdict (val and test figures beside the blurry input and the spike floor) and the timing summary
(the run's one step-time figure, from the timing callback)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from lightning.pytorch.callbacks import Callback

__all__ = ["verdict", "print_report"]


def _against_references(prefix: str, psnr: float, ssim: float | None, blur: float, floor: float | None) -> str:
    """``val/psnr 31.92 dB | blurry input 28.17 dB (+3.75) | spike floor 31.19 dB (+0.73)   val/ssim 0.8917``."""
    line = f"{prefix}/psnr {psnr:.2f} dB | blurry input {blur:.2f} dB ({psnr - blur:+.2f})"
    if floor is not None:
        line += f" | spike floor {floor:.2f} dB ({psnr - floor:+.2f})"
    return line + (f"   {prefix}/ssim {ssim:.4f}" if ssim is not None else "")


def _beats(psnr: float, blur: float, floor: float | None) -> str:
    refs = (("the input", blur), ("the spike floor", floor))
    beats = [name for name, ref in refs if ref is not None and psnr > ref]
    misses = [name for name, ref in refs if ref is not None and psnr <= ref]
    verdict = ("beats " + " and ".join(beats)) if beats else ""
    if misses:
        verdict += ("; " if verdict else "") + "does NOT beat " + " or ".join(misses)
    return verdict


def _where(scope: dict[str, Any]) -> str:
    return f"{scope['frames']} frames of {scope['clips']} clips at {scope['size'][0]}x{scope['size'][1]}"


def verdict(summary: dict[str, Any]) -> list[str]:
    """The lines a user reads first: the model vs the blurry input and vs the non-learned spike floor,
    on the val split (the last validation), then the val-selected checkpoint on the test split."""
    psnr, blur, floor = summary["val_psnr"], summary["val_psnr_input"], summary.get("val_psnr_spike_floor")
    scope, split = summary.get("val_scope"), summary.get("val_split") or "val"
    if psnr is None or blur is None:
        return []
    lines = [_against_references("val", psnr, summary.get("val_ssim"), blur, floor)]
    if scope is not None and not scope["whole_split"]:
        lines.append(f"NOT a verdict: measured on a subset ({scope['scored']} frames at {scope['size'][0]}x"
                     f"{scope['size'][1]}) of the {split} split ({scope['frames']} frames of {scope['clips']} clips); "
                     "set trainer.limit_val_batches=1.0 and data.eval_crop_size=null")
    elif scope is not None:
        lines.append(f"verdict on the whole {split} split ({_where(scope)}, full frames): {_beats(psnr, blur, floor)}")
    test, test_scope = summary.get("test_psnr"), summary.get("test_scope")
    if test is not None and summary.get("test_psnr_input") is not None:
        t_blur, t_floor = summary["test_psnr_input"], summary.get("test_psnr_spike_floor")
        lines.append(_against_references("test", test, summary.get("test_ssim"), t_blur, t_floor))
        best = Path(summary["best_ckpt"]).name if summary.get("best_ckpt") else "?"
        chosen = f"the checkpoint selected on {split} ({best}"
        chosen += f", val/psnr {summary['best_val_psnr']:.2f} dB)" if summary.get("best_val_psnr") is not None else ")"
        where = _where(test_scope) if test_scope else "?"
        whole = "whole " if test_scope and test_scope["whole_split"] else "a subset of the "
        lines.append(f"test figure of {chosen} on the {whole}{summary.get('test_split') or 'test'} split "
                     f"({where}{', full frames' if test_scope and test_scope['whole_split'] else ''}): "
                     f"{_beats(test, t_blur, t_floor)}")
    return lines


def print_report(summary: dict[str, Any], callbacks: list[Callback]) -> None:
    print("\n".join([f"\nRun dir: {summary['run_dir']}", *verdict(summary)]), flush=True)
    for cb in callbacks:
        report = getattr(cb, "summary", None)
        if callable(report):
            text = report()
            if text:
                print(text, flush=True)
