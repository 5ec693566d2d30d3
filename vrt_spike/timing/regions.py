"""The contract's region map: dotted region names -> named submodules of a network.

A region's *suffix* is its name without the ``forward.`` / ``backward.`` prefix: ``""`` is the
whole network, ``"vrt.stage3"`` the third VRT stage. Forward regions are ``forward`` and
``forward.<suffix>``; backward regions are ``backward.<suffix>``; gradient-checkpoint recompute
is ``backward.recompute.<suffix>``.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from torch import nn

VRT_CHILDREN = ("spynet", *(f"stage{i}" for i in range(1, 9)))
SCALES = tuple(f"scale{i}" for i in range(1, 5))
BRANCHES = ("spike_encoder", "spike_tsa")


@dataclass(frozen=True)
class Region:
    suffix: str  # "" for the whole network, else e.g. "vrt.stage3"
    path: str  # submodule path inside the network ("" = the network itself)
    module: nn.Module

    @property
    def forward_name(self) -> str:
        return f"forward.{self.suffix}" if self.suffix else "forward"

    @property
    def backward_name(self) -> str:
        return f"backward.{self.suffix}" if self.suffix else "backward"

    @property
    def recompute_name(self) -> str:
        return f"backward.recompute.{self.suffix}" if self.suffix else "backward.recompute"


def _child(module: nn.Module, name: str) -> nn.Module | None:
    return module._modules.get(name)  # direct children only; get_submodule would raise


def _require(parent: nn.Module, parent_path: str, names: tuple[str, ...]) -> None:
    missing = [n for n in names if _child(parent, n) is None]
    if missing:
        raise ValueError(
            f"timing: submodule '{parent_path}' of the network lacks the contract's children "
            f"{missing} (expected {list(names)}, found {list(parent._modules)})"
        )


def find_regions(net: nn.Module) -> list[Region]:
    """Regions of `net` (VRTWithSpike, a bare VRT, or any net using the contract's names).

    Raises ValueError naming the expected submodules when `net` has none of them, or when a
    present part (``vrt``, ``spike_encoder``, ``spike_tsa``) lacks one of its named children.
    """
    regions = [Region("", "", net)]
    vrt = _child(net, "vrt")
    if vrt is not None:
        _require(vrt, "vrt", VRT_CHILDREN)
        regions.append(Region("vrt", "vrt", vrt))
        regions += [Region(f"vrt.{c}", f"vrt.{c}", _child(vrt, c)) for c in VRT_CHILDREN]
    elif all(_child(net, c) is not None for c in VRT_CHILDREN):
        # A bare VRT: same names as inside VRTWithSpike so runs stay comparable.
        regions += [Region(f"vrt.{c}", c, _child(net, c)) for c in VRT_CHILDREN]
    for branch in BRANCHES:
        mod = _child(net, branch)
        if mod is None:
            continue
        # Only the scales a fusion reads are built (model=fast skips stage 1: scale2..4).
        scales = [s for s in SCALES if _child(mod, s) is not None]
        if not scales:
            raise ValueError(
                f"timing: submodule '{branch}' of the network has none of the contract's children "
                f"{list(SCALES)} (found {list(mod._modules)})"
            )
        regions.append(Region(branch, branch, mod))
        regions += [Region(f"{branch}.{s}", f"{branch}.{s}", _child(mod, s)) for s in scales]
    fusion = _child(net, "fusion")
    if fusion is not None:
        stages = sorted(
            (n for n in fusion._modules if n.startswith("stage") and n[5:].isdigit()),
            key=lambda n: int(n[5:]),
        )
        if not stages:
            raise ValueError(
                f"timing: submodule 'fusion' has no stage<i> children (found {list(fusion._modules)})"
            )
        regions.append(Region("fusion", "fusion", fusion))
        regions += [Region(f"fusion.{s}", f"fusion.{s}", _child(fusion, s)) for s in stages]
    head = _child(net, "spike_head")
    if head is not None:  # VRTWithSpike's refinement head (one region, no children of the contract)
        regions.append(Region("spike_head", "spike_head", head))
    if len(regions) == 1:
        raise ValueError(
            "timing: the network has none of the contract's submodules: expected 'vrt' "
            f"(or VRT's own {list(VRT_CHILDREN)}), 'spike_encoder', 'spike_tsa' or 'fusion'; "
            f"found {list(net._modules)}"
        )
    return regions


def enclosing_regions(net: nn.Module, regions: list[Region]) -> dict[int, Region]:
    """``id(module) -> deepest region containing it`` for every submodule that is not itself a
    region module (those have their own hooks)."""
    region_ids = {id(r.module) for r in regions}
    by_depth = sorted(regions, key=lambda r: -len(r.path))
    out: dict[int, Region] = {}
    for path, module in net.named_modules():
        if id(module) in region_ids:
            continue
        out[id(module)] = next(r for r in by_depth
                               if r.path == "" or path == r.path or path.startswith(r.path + "."))
    return out


@lru_cache(maxsize=4096)
def ancestors(name: str) -> tuple[str, ...]:
    """``"forward.vrt.stage3"`` -> ``("forward.vrt.stage3", "forward.vrt", "forward")``."""
    parts = name.split(".")
    return tuple(".".join(parts[:i]) for i in range(len(parts), 0, -1))


def parent(name: str) -> str | None:
    return name.rsplit(".", 1)[0] if "." in name else None
