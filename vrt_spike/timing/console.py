"""Console view of the timings: a live in-place top-N panel on a terminal, one line otherwise.

The ranking uses each region's *exclusive* time (its time minus its nested regions'), so the
percentages never count a millisecond twice and point at where the time really goes.
"""
from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import IO

from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from vrt_spike.timing.table import WORKER_PREFIX, RegionStats

MODES = ("auto", "live", "plain", "off")
BAR_WIDTH = 30


def top_regions(stats: Sequence[RegionStats], top_n: int) -> list[RegionStats]:
    """The `top_n` regions by exclusive time per step (``step`` and worker stages excluded)."""
    ranked = [s for s in stats if s.region != "step" and not s.region.startswith(WORKER_PREFIX)]
    ranked.sort(key=lambda s: (-s.self_ms, s.region))
    return [s for s in ranked[:top_n] if s.self_ms > 0]


def unattributed_ms(stats: Sequence[RegionStats]) -> float:
    """Step time outside every region (Python glue, loss, Lightning bookkeeping)."""
    step = next((s for s in stats if s.region == "step"), None)
    if step is None:
        return 0.0
    inside = sum(s.self_ms for s in stats if s.region != "step" and not s.region.startswith(WORKER_PREFIX))
    return max(step.mean_ms - inside, 0.0)


def _footer(step: int, stats: Sequence[RegionStats], samples_per_s: float | None,
            mfu: float | None) -> str:
    step_stats = next((s for s in stats if s.region == "step"), None)
    parts = [f"step {step}"]
    if step_stats is not None:
        parts.append(f"{step_stats.mean_ms:.1f} ms/step")
    if samples_per_s is not None:
        parts.append(f"{samples_per_s:.2f} samples/s")
    if mfu is not None:
        parts.append(f"MFU {100 * mfu:.1f}%")
    parts.append(f"unattributed {unattributed_ms(stats):.1f} ms")
    return " | ".join(parts)


def render_table(step: int, stats: Sequence[RegionStats], top_n: int,
                 samples_per_s: float | None = None, mfu: float | None = None) -> Table:
    table = Table(title=f"Timing profile (step {step})", title_justify="left",
                  caption=_footer(step, stats, samples_per_s, mfu), caption_justify="left",
                  show_edge=False, pad_edge=False)
    table.add_column("region", no_wrap=True)
    table.add_column("", no_wrap=True)
    table.add_column("ms", justify="right")
    table.add_column("%", justify="right")
    for s in top_regions(stats, top_n):
        filled = round(BAR_WIDTH * min(max(s.self_share, 0.0), 1.0))
        bar = Text("█" * filled, style="cyan") + Text("░" * (BAR_WIDTH - filled), style="dim")
        table.add_row(s.region, bar, f"{s.self_ms:.1f}", f"{100 * s.self_share:.1f}")
    return table


def plain_line(step: int, stats: Sequence[RegionStats], top_n: int,
               samples_per_s: float | None = None, mfu: float | None = None) -> str:
    tops = ", ".join(f"{s.region} {s.self_ms:.1f} ms ({100 * s.self_share:.1f}%)"
                     for s in top_regions(stats, top_n))
    return f"[timing] {_footer(step, stats, samples_per_s, mfu)} | top: {tops}"


class ConsoleView:
    """``mode``: ``auto`` (live on a TTY, plain otherwise), ``live``, ``plain`` or ``off``."""

    def __init__(self, mode: str | bool | None = "auto", top_n: int = 8,
                 stream: IO[str] | None = None) -> None:
        if mode is None or mode is True:
            mode = "auto"
        elif mode is False:
            mode = "off"
        if mode not in MODES:
            raise ValueError(f"timing: console must be one of {MODES} (or a bool), got {mode!r}")
        if top_n < 1:
            raise ValueError(f"timing: top_n must be >= 1, got {top_n}")
        self.stream = stream if stream is not None else sys.stdout
        if mode == "auto":
            mode = "live" if self.stream.isatty() else "plain"
        self.mode = mode
        self.top_n = top_n
        self._live: Live | None = None

    def update(self, step: int, stats: Sequence[RegionStats], samples_per_s: float | None = None,
               mfu: float | None = None) -> None:
        if self.mode == "off" or not stats:
            return
        if self.mode == "plain":
            print(plain_line(step, stats, self.top_n, samples_per_s, mfu), file=self.stream, flush=True)
            return
        table = render_table(step, stats, self.top_n, samples_per_s, mfu)
        if self._live is None:
            self._live = Live(table, console=Console(file=self.stream), auto_refresh=False,
                              transient=False)
            self._live.start()
        self._live.update(table, refresh=True)

    def close(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None
