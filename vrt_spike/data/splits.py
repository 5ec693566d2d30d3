"""Which clips each split holds: train, val and test never share a clip.

``data.train_split``, ``data.val_split`` and ``data.test_split`` name split directories of the
GoPro-spike layout (:mod:`vrt_spike.data.layout`). Validation (checkpoint selection, early
stopping, sweep ranking) either has a directory of its own (the embedded synthetic dataset:
``val``) or is held out of the training directory (GoPro-spike has only ``train`` and ``test``):
``data.val_split=train`` with ``data.val_clips`` = a count N (the N clips at evenly spaced
positions of the sorted names: the centres of N equal runs, deterministic) or a list of clip
names. Held-out clips leave training. A clip (by name) in two splits is refused, so validation
can never be the test split.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from vrt_spike.data import layout

__all__ = ["ROLES", "SplitError", "Split", "held_out", "resolve_splits"]

# How many shared or unknown clip names an error lists.
SHOWN = 5
ROLES = ("train", "val", "test")


class SplitError(ValueError):
    """Splits that would share a clip, or a held-out list that does not match the training split."""


@dataclass(frozen=True)
class Split:
    """One split: the layout directory its clips live in, and which of them it uses (sorted names)."""

    role: str  # train | val | test
    directory: str  # the layout's split directory (``<directory>_GT`` ...)
    clips: tuple[str, ...]
    held_out: bool = False  # val clips taken out of the training directory

    def describe(self) -> str:
        """What a figure was measured on, e.g. ``val`` or ``val (2 clips held out of train)``."""
        if self.held_out:
            return f"{self.role} ({len(self.clips)} clips held out of {self.directory})"
        return self.role if self.role == self.directory else f"{self.role} ({self.directory})"


def _shown(names: Sequence[str]) -> str:
    more = f" and {len(names) - SHOWN} more" if len(names) > SHOWN else ""
    return f"{list(names[:SHOWN])}{more}"


def held_out(names: Sequence[str], val_clips: int | Sequence[str], where: str) -> list[str]:
    """The clips of ``names`` (a training split, ``where``) held out for validation.

    ``val_clips``: a count N, 1 <= N < len(names): the clips at sorted positions
    ``(2 i + 1) * len(names) // (2 N)`` for ``i < N`` (centres of N equal runs); or a list of names,
    each of which must be in ``names``.
    """
    ordered = sorted(names)
    if isinstance(val_clips, bool) or not isinstance(val_clips, (int, Sequence)) or isinstance(val_clips, str):
        raise SplitError(f"data.val_clips: expected a count or a list of clip names of {where}, got {val_clips!r}")
    if isinstance(val_clips, int):
        if not 1 <= val_clips < len(ordered):
            raise SplitError(f"data.val_clips={val_clips}: expected 1 <= count < {len(ordered)} (the clips of {where}; "
                             "training keeps at least one)")
        return [ordered[(2 * i + 1) * len(ordered) // (2 * val_clips)] for i in range(val_clips)]
    chosen = sorted(dict.fromkeys(str(n) for n in val_clips))
    unknown = [n for n in chosen if n not in set(ordered)]
    if unknown:
        raise SplitError(f"data.val_clips: {len(unknown)} clips not in {where}: {_shown(unknown)} "
                         f"(its clips: {_shown(ordered)})")
    if not chosen or len(chosen) == len(ordered):
        raise SplitError(f"data.val_clips: expected 1 to {len(ordered) - 1} of the {len(ordered)} clips of {where} "
                         f"(training keeps at least one), got {len(chosen)}")
    return chosen


def resolve_splits(root: str | os.PathLike, *, train_split: str = "train", val_split: str = "val",
                   test_split: str = "test", val_clips: int | Sequence[str] | None = None,
                   needed: Sequence[str] = ROLES) -> dict[str, Split]:
    """``role -> Split`` for the roles in ``needed`` (their directories must exist) and every other
    role whose directory exists (a test-only dataset evaluates without a train directory).

    Raises :class:`SplitError` naming the clips and both splits when a clip would be in two
    splits (e.g. ``data.val_split=test``, or the training directory validated without
    ``data.val_clips``), and for a ``val_clips`` that does not fit the training split.
    """
    root = Path(root)
    directories = {"train": train_split, "val": val_split, "test": test_split}
    unknown = sorted(set(needed) - set(ROLES))
    if unknown:
        raise ValueError(f"unknown split roles {unknown} (expected some of {ROLES})")
    present = [r for r, d in directories.items() if r in needed or (root / layout.RGB_DIR / f"{d}_GT").is_dir()]
    names = {role: layout.clip_names(root, directories[role]) for role in present}
    held = val_split == train_split and val_clips is not None
    if val_clips is not None and not held:
        raise SplitError(f"data.val_clips={val_clips!r} holds clips out of the training split, but "
                         f"data.val_split={val_split!r} is not data.train_split={train_split!r}: set "
                         "data.val_clips=null to validate on that directory, or data.val_split="
                         f"{train_split} to hold clips out of training")
    if held and "val" in names:  # names["val"] lists the training directory
        names["val"] = held_out(names["val"], val_clips, f"{root / layout.RGB_DIR / f'{train_split}_GT'}")
        if "train" in names:
            names["train"] = [n for n in names["train"] if n not in set(names["val"])]
    for i, a in enumerate(present):
        for b in present[i + 1 :]:
            shared = sorted(set(names[a]) & set(names[b]))
            if shared:
                raise SplitError(
                    f"{len(shared)} clips are in two splits, {a} ({root / layout.RGB_DIR / f'{directories[a]}_GT'}) "
                    f"and {b} ({root / layout.RGB_DIR / f'{directories[b]}_GT'}): {_shown(shared)}. Each clip must be "
                    "in exactly one of train (fitting), val (selection) and test (the reported figure): "
                    + _fix_hint(a, b, directories))
    return {role: Split(role, directories[role], tuple(names[role]), held_out=role == "val" and held)
            for role in present}


def _fix_hint(a: str, b: str, directories: dict[str, str]) -> str:
    if {a, b} == {"train", "val"} and directories["train"] == directories["val"]:
        return (f"hold validation clips out of {directories['train']} with data.val_clips=<count or [names]>, "
                "or point data.val_split at a directory of its own")
    if "test" in (a, b) and directories["test"] in (directories["train"], directories["val"]):
        return f"data.{'val' if 'val' in (a, b) else 'train'}_split must not be the test split ({directories['test']})"
    return "remove or rename the shared clips in one of the two directories"
