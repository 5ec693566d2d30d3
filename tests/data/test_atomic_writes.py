"""The one atomic writer: new files get umask permissions; an interrupted write keeps the old file."""
from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pytest

from vrt_spike.atomic import atomic_path, write_bytes_atomically, write_text_atomically
from vrt_spike.data.spike_io import write_dat
from vrt_spike.data.writers import write_png
from vrt_spike.timing.table import write_meta


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    try:
        yield 0o644
    finally:
        os.umask(old)


def test_every_writer_gives_umask_permissions(tmp_path: Path, umask_022: int) -> None:
    write_text_atomically(tmp_path / "a.csv", "x\n")
    write_bytes_atomically(tmp_path / "b.bin", b"\x00\x01")
    write_dat(tmp_path / "c.dat", np.zeros((2, 4, 8), dtype=np.uint8))
    write_png(tmp_path / "d.png", np.zeros((4, 4, 3), dtype=np.uint8))
    write_meta(tmp_path / "timing", {"interval": 1})
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(written) == 5
    assert {p.name: _mode(p) for p in written} == {p.name: umask_022 for p in written}  # not mkstemp's 0600


def test_an_interrupted_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "summary.json"
    write_text_atomically(target, "old")
    with pytest.raises(KeyboardInterrupt), atomic_path(target) as tmp:
        tmp.write_text("half of the ne")
        raise KeyboardInterrupt
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.json"]


def test_the_temporary_file_keeps_the_suffix_and_text_is_written_as_given(tmp_path: Path) -> None:
    with atomic_path(tmp_path / "sub" / "strip.png") as tmp:
        assert tmp.parent == tmp_path / "sub" and tmp.suffix == ".png" and tmp.name.startswith(".strip.")
        tmp.write_bytes(b"png")
    write_text_atomically(tmp_path / "t.csv", "a,b\r\n1,2\r\n")
    assert (tmp_path / "t.csv").read_bytes() == b"a,b\r\n1,2\r\n"  # csv's line endings are kept
