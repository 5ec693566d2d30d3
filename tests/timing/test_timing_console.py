"""Console view: in-place live panel on a TTY, one plain line per update otherwise."""
from __future__ import annotations

import io

import pytest

from vrt_spike.timing.console import ConsoleView, plain_line, top_regions
from vrt_spike.timing.table import TimingRow, summarize


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def stats(scale: float = 1.0):
    rows = []
    for step in range(3):
        rows += [TimingRow(step, 0, 0, "step", 100 * scale), TimingRow(step, 0, 0, "forward", 60 * scale),
                 TimingRow(step, 0, 0, "forward.vrt", 50 * scale),
                 TimingRow(step, 0, 0, "forward.vrt.stage8", 40 * scale),
                 TimingRow(step, 0, 0, "backward", 30 * scale),
                 TimingRow(step, 0, 0, "data.decode_spike", 500.0)]
    return summarize(rows)


def test_top_regions_rank_exclusive_time():
    top = top_regions(stats(), 3)
    assert [(s.region, s.self_ms) for s in top] == [
        ("forward.vrt.stage8", 40), ("backward", 30), ("forward", 10)]  # worker stages excluded


def test_plain_mode_when_not_a_tty():
    out = io.StringIO()
    view = ConsoleView("auto", top_n=2, stream=out)
    assert view.mode == "plain"
    view.update(20, stats(), samples_per_s=12.5)
    view.update(40, stats(2.0))
    lines = out.getvalue().splitlines()
    assert lines == [plain_line(20, stats(), 2, 12.5), plain_line(40, stats(2.0), 2)]
    assert lines[0].startswith("[timing] step 20 | 100.0 ms/step | 12.50 samples/s")
    assert "forward.vrt.stage8 40.0 ms (40.0%), backward 30.0 ms (30.0%)" in lines[0]


def test_live_mode_redraws_in_place_on_a_tty():
    out = FakeTTY()
    view = ConsoleView("auto", top_n=3, stream=out)
    assert view.mode == "live"
    view.update(20, stats())
    first = out.getvalue()
    view.update(40, stats(2.0))
    view.close()
    text = out.getvalue()
    assert "Timing profile (step 20)" in first and "█" in first and "40.0" in first
    second = text[len(first):]
    assert "\x1b[1A" in second or "\x1b[2K" in second  # cursor moves up: the panel is redrawn
    assert "Timing profile (step 40)" in second and "80.0" in second


def test_console_modes_validated():
    assert ConsoleView(False).mode == "off"
    with pytest.raises(ValueError, match="console must be one of"):
        ConsoleView("fancy")
