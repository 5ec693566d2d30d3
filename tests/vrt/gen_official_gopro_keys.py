"""Write ``official_gopro_keys.txt``: state-dict names and shapes of the official GoPro VRT.

Derived by hand from reading the official constructor (``models/network_vrt.py``, task
``006_VRT_videodeblurring_GoPro``), independently of ``vrt_spike.models.vrt``. The test suite
compares our model against the file; ``test_vrt_official_parity.py`` cross-checks the file
against the official module when ``VRT_OFFICIAL_DIR`` is set.

Run: ``python tests/vrt/gen_official_gopro_keys.py`` (rewrites the file next to this script).
"""
from __future__ import annotations

import os
from pathlib import Path

DEPTHS = [8] * 7 + [4] * 4
EMBED = [96] * 7 + [120] * 4
HEADS = [6] * 11
WINDOW = (6, 8, 8)
INDEP_RECONSTS = (9, 10)
DEFORMABLE_GROUPS = 16
MLP_RATIO = 2
IN_CHANS = 3


def _linear(name: str, out_f: int, in_f: int) -> list[tuple[str, tuple[int, ...]]]:
    return [(f"{name}.weight", (out_f, in_f)), (f"{name}.bias", (out_f,))]


def _norm(name: str, dim: int) -> list[tuple[str, tuple[int, ...]]]:
    return [(f"{name}.weight", (dim,)), (f"{name}.bias", (dim,))]


def _conv(name: str, out_c: int, in_c: int, kernel: tuple[int, ...]) -> list[tuple[str, tuple[int, ...]]]:
    return [(f"{name}.weight", (out_c, in_c, *kernel)), (f"{name}.bias", (out_c,))]


def _block(prefix: str, dim: int, heads: int, window: tuple[int, int, int], mutual: bool):
    n = window[0] * window[1] * window[2]
    table = (2 * window[0] - 1) * (2 * window[1] - 1) * (2 * window[2] - 1)
    keys = _norm(f"{prefix}.norm1", dim)
    keys += [(f"{prefix}.attn.relative_position_bias_table", (table, heads)),
             (f"{prefix}.attn.relative_position_index", (n, n))]
    keys += _linear(f"{prefix}.attn.qkv_self", 3 * dim, dim)
    keys += _linear(f"{prefix}.attn.proj", dim, 2 * dim if mutual else dim)
    if mutual:
        keys += [(f"{prefix}.attn.position_bias", (1, window[1] * window[2], dim))]
        keys += _linear(f"{prefix}.attn.qkv_mut", 3 * dim, dim)
    keys += _norm(f"{prefix}.norm2", dim)
    hidden = dim * MLP_RATIO
    keys += _linear(f"{prefix}.mlp.fc11", hidden, dim) + _linear(f"{prefix}.mlp.fc12", hidden, dim)
    keys += _linear(f"{prefix}.mlp.fc2", dim, hidden)
    return keys


def official_gopro_layout() -> list[tuple[str, tuple[int, ...]]]:
    keys = _conv("conv_first", EMBED[0], IN_CHANS * 9, (1, 3, 3))
    spynet_channels = [8, 32, 64, 32, 16, 2]
    for level in range(6):
        for j in range(5):
            keys += _conv(f"spynet.basic_module.{level}.basic_module.{2 * j}",
                          spynet_channels[j + 1], spynet_channels[j], (7, 7))
    keys += [("spynet.mean", (1, 3, 1, 1)), ("spynet.std", (1, 3, 1, 1))]

    for i, reshape in enumerate(["none", "down", "down", "down", "up", "up", "up"]):
        s, dim, in_dim = f"stage{i + 1}", EMBED[i], EMBED[i - 1]
        if reshape == "none":
            keys += _norm(f"{s}.reshape.1", dim)
        elif reshape == "down":
            keys += _norm(f"{s}.reshape.1", 4 * in_dim) + _linear(f"{s}.reshape.2", dim, 4 * in_dim)
        else:
            keys += _norm(f"{s}.reshape.1", in_dim // 4) + _linear(f"{s}.reshape.2", dim, in_dim // 4)
        mutual_depth = int(DEPTHS[i] * 0.75)
        for j in range(mutual_depth):
            keys += _block(f"{s}.residual_group1.blocks.{j}", dim, HEADS[i], (2, WINDOW[1], WINDOW[2]), True)
        keys += _linear(f"{s}.linear1", dim, dim)
        for j in range(DEPTHS[i] - mutual_depth):
            keys += _block(f"{s}.residual_group2.blocks.{j}", dim, HEADS[i], WINDOW, False)
        keys += _linear(f"{s}.linear2", dim, dim)
        keys += [(f"{s}.pa_deform.weight", (dim, dim, 3, 3)), (f"{s}.pa_deform.bias", (dim,))]
        keys += _conv(f"{s}.pa_deform.conv_offset.0", dim, 2 * dim + 2, (3, 3))
        keys += _conv(f"{s}.pa_deform.conv_offset.2", dim, dim, (3, 3))
        keys += _conv(f"{s}.pa_deform.conv_offset.4", dim, dim, (3, 3))
        keys += _conv(f"{s}.pa_deform.conv_offset.6", 27 * DEFORMABLE_GROUPS, dim, (3, 3))
        keys += _linear(f"{s}.pa_fuse.fc11", 3 * dim, 3 * dim) + _linear(f"{s}.pa_fuse.fc12", 3 * dim, 3 * dim)
        keys += _linear(f"{s}.pa_fuse.fc2", dim, 3 * dim)

    keys += _norm("stage8.0.1", EMBED[6]) + _linear("stage8.0.2", EMBED[7], EMBED[6])
    for i in range(7, len(DEPTHS)):
        window = (1, WINDOW[1], WINDOW[2]) if i in INDEP_RECONSTS else WINDOW
        for j in range(DEPTHS[i]):
            keys += _block(f"stage8.{i - 6}.residual_group.blocks.{j}", EMBED[i], HEADS[i], window, False)
        keys += _linear(f"stage8.{i - 6}.linear", EMBED[i], EMBED[i])

    keys += _norm("norm", EMBED[-1]) + _linear("conv_after_body", EMBED[0], EMBED[-1])
    keys += _conv("conv_last", 3, EMBED[0], (1, 3, 3))
    return keys


def main() -> None:
    out = Path(__file__).with_name("official_gopro_keys.txt")
    lines = [f"{name} {','.join(map(str, shape))}" for name, shape in sorted(official_gopro_layout())]
    tmp = out.with_suffix(".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    os.replace(tmp, out)


if __name__ == "__main__":
    main()
