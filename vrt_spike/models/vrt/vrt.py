"""VRT (Liang et al., "VRT: A Video Restoration Transformer", 2022) for upscale=1 (deblurring).

Same function and state-dict layout as the official ``models/network_vrt.py``; attention runs
through SDPA, shift masks are cached per shape (the bias index is a buffer, sliced per call), no
forward changes module state (so ``torch.compile`` captures the model whole), and the feature
loop exposes a fusion point after each of stages 1-4.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from einops.layers.torch import Rearrange
from torch import Tensor, nn

from vrt_spike.models.vrt.attention import AttnImpl
from vrt_spike.models.vrt.stage import Stage, Stage8
from vrt_spike.models.vrt.tmsa import RTMSA
from vrt_spike.models.vrt.warp import SpyNet, flow_warp, frame_pairs, pairs_to_frames

StageHook = Callable[[int, Tensor], Tensor]
"""``feat = hook(i, feat)`` after stage ``i`` in 1..4, ``feat (B, C_i, T, H_i, W_i)``."""

_RESHAPES = ("none", "down", "down", "down", "up", "up", "up")
_SCALES = (1, 2, 4, 8, 4, 2, 1)
NUM_SCALES = 4  # flows at 1, 1/2, 1/4, 1/8: H and W must be multiples of 2 ** (NUM_SCALES - 1)


class VRT(nn.Module):
    """Video Restoration Transformer, ``(B, T, 3, H, W) -> (B, T, 3, H, W)`` with a global residual.

    Arguments keep the official names and meanings (see upstream ``network_vrt.VRT``); the
    defaults are upstream's. ``img_size`` does not constrain the input (it only documents the
    training size). ``attn_impl`` picks ``"sdpa"`` (default) or the ``"explicit"`` softmax
    reference; ``use_checkpoint_align`` recomputes stages 1-7's parallel-warping alignment in
    backward (see :class:`Stage`). Only ``upscale=1``, ``pa_frames=2`` and blind restoration are implemented; so
    upstream's ``recal_all_flows`` (flows of ``pa_frames`` 4 and 6) is not an argument.

    Input: ``T >= 2``; ``H`` and ``W`` multiples of 8, at least :attr:`min_input_hw` (40 and
    ``8 * window_size``: SpyNet's pyramid and the 1/8-scale mutual attention need it). Use
    :func:`vrt_spike.models.vrt.tiling.tiled_forward` for any other size.
    """

    def __init__(
        self,
        upscale: int = 4,
        in_chans: int = 3,
        out_chans: int = 3,
        img_size: Sequence[int] = (6, 64, 64),
        window_size: Sequence[int] = (6, 8, 8),
        depths: Sequence[int] = (8, 8, 8, 8, 8, 8, 8, 4, 4, 4, 4, 4, 4),
        indep_reconsts: Sequence[int] = (11, 12),
        embed_dims: Sequence[int] = (120, 120, 120, 120, 120, 120, 120, 180, 180, 180, 180, 180, 180),
        num_heads: Sequence[int] = (6,) * 13,
        mul_attn_ratio: float = 0.75,
        mlp_ratio: float = 2.0,
        qkv_bias: bool = True,
        qk_scale: float | None = None,
        drop_path_rate: float = 0.2,
        norm_layer: type[nn.Module] = nn.LayerNorm,
        spynet_path: str | Path | None = None,
        pa_frames: int = 2,
        deformable_groups: int = 16,
        nonblind_denoising: bool = False,
        use_checkpoint_attn: bool = False,
        use_checkpoint_ffn: bool = False,
        no_checkpoint_attn_blocks: Sequence[int] = (),
        no_checkpoint_ffn_blocks: Sequence[int] = (),
        attn_impl: AttnImpl = "sdpa",
        use_checkpoint_align: bool = False,
    ) -> None:
        super().__init__()
        if upscale != 1:
            raise NotImplementedError(f"only upscale=1 (deblurring) is implemented, got upscale={upscale}")
        if nonblind_denoising:
            raise NotImplementedError("nonblind_denoising=True is not implemented")
        if pa_frames != 2:
            raise NotImplementedError(f"only pa_frames=2 is implemented, got pa_frames={pa_frames}")
        depths, embed_dims, num_heads = list(depths), list(embed_dims), list(num_heads)
        if not len(depths) == len(embed_dims) == len(num_heads) or len(depths) < 8:
            raise ValueError(
                f"depths, embed_dims and num_heads need one entry per layer (>= 8) and equal lengths, got "
                f"{len(depths)}, {len(embed_dims)}, {len(num_heads)}"
            )
        if len(window_size) != 3:
            raise ValueError(f"window_size must be [Wd, Wh, Ww], got {list(window_size)}")
        self.in_chans = in_chans
        self.out_chans = out_chans
        self.upscale = upscale
        self.img_size = tuple(img_size)
        self.window_size = tuple(window_size)
        self.pa_frames = pa_frames
        self.nonblind_denoising = nonblind_denoising

        self.conv_first = nn.Conv3d(in_chans * (1 + 2 * 4), embed_dims[0], kernel_size=(1, 3, 3), padding=(0, 1, 1))
        self.spynet = SpyNet(spynet_path, return_levels=(2, 3, 4, 5))

        dpr = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        ckpt_attn = [use_checkpoint_attn and i not in no_checkpoint_attn_blocks for i in range(len(depths))]
        ckpt_ffn = [use_checkpoint_ffn and i not in no_checkpoint_ffn_blocks for i in range(len(depths))]
        common = dict(mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, qk_scale=qk_scale, norm_layer=norm_layer, attn_impl=attn_impl)
        for i in range(7):
            stage = Stage(
                in_dim=embed_dims[i - 1],  # stage 1 ignores it (no channel change)
                dim=embed_dims[i],
                depth=depths[i],
                num_heads=num_heads[i],
                window_size=self.window_size,
                mul_attn_ratio=mul_attn_ratio,
                drop_path=dpr[sum(depths[:i]) : sum(depths[: i + 1])],
                pa_frames=pa_frames,
                deformable_groups=deformable_groups,
                reshape=_RESHAPES[i],
                max_residue_magnitude=10 / _SCALES[i],
                use_checkpoint_attn=ckpt_attn[i],
                use_checkpoint_ffn=ckpt_ffn[i],
                use_checkpoint_align=use_checkpoint_align,
                **common,
            )
            self.add_module(f"stage{i + 1}", stage)

        self.stage8 = Stage8(
            nn.Sequential(
                Rearrange("n c d h w -> n d h w c"),
                nn.LayerNorm(embed_dims[6]),
                nn.Linear(embed_dims[6], embed_dims[7]),
                Rearrange("n d h w c -> n c d h w"),
            ),
            *(
                RTMSA(
                    dim=embed_dims[i],
                    depth=depths[i],
                    num_heads=num_heads[i],
                    window_size=(1, window_size[1], window_size[2]) if i in indep_reconsts else self.window_size,
                    drop_path=dpr[sum(depths[:i]) : sum(depths[: i + 1])],
                    use_checkpoint_attn=ckpt_attn[i],
                    use_checkpoint_ffn=ckpt_ffn[i],
                    **common,
                )
                for i in range(7, len(depths))
            ),
        )
        self.norm = norm_layer(embed_dims[-1])
        self.conv_after_body = nn.Linear(embed_dims[-1], embed_dims[0])
        self.conv_last = nn.Conv3d(embed_dims[0], out_chans, kernel_size=(1, 3, 3), padding=(0, 1, 1))

    # ------------------------------------------------------------------ input checks
    input_multiple = 2 ** (NUM_SCALES - 1)

    @property
    def min_input_hw(self) -> tuple[int, int]:
        """Smallest (H, W): the 1/8-scale mutual attention needs a full window, and SpyNet's
        coarsest level (1/64 of H, W rounded up to 32) at least one pixel, i.e. H, W > 32."""
        m = self.input_multiple
        spynet_min = 32 + m
        return max(m * self.window_size[1], spynet_min), max(m * self.window_size[2], spynet_min)

    def check_input(self, x: Tensor) -> None:
        """Raise ValueError unless ``x`` is ``(B, T >= 2, in_chans, H, W)`` with a supported H, W.

        Shapes only: reading values would make the host wait for the device in every step
        (finite inputs are checked where clips are restored, :func:`vrt_spike.restore.restore_clip`).
        """
        if x.ndim != 5:
            raise ValueError(f"VRT expects (B, T, {self.in_chans}, H, W), got a {x.ndim}-D tensor of shape {tuple(x.shape)}")
        _, t, c, h, w = x.shape
        if c != self.in_chans:
            raise ValueError(f"VRT expects {self.in_chans} channels at dim 2 of (B, T, C, H, W), got shape {tuple(x.shape)}")
        if self.pa_frames and t < 2:
            raise ValueError(f"VRT with pa_frames={self.pa_frames} needs T >= 2 frames, got shape {tuple(x.shape)}")
        factor = self.input_multiple
        min_h, min_w = self.min_input_hw
        if h % factor or w % factor or h < min_h or w < min_w:
            raise ValueError(
                f"VRT expects H, W multiples of {factor} and at least ({min_h}, {min_w}) for window_size "
                f"{list(self.window_size)}, got H={h}, W={w} (shape {tuple(x.shape)}); pad the input or use tiled_forward"
            )

    # ------------------------------------------------------------------ forward
    def forward(self, x: Tensor, stage_hook: StageHook | None = None, residual_base: Tensor | None = None) -> Tensor:
        """``x (B, T, 3, H, W)`` in [0, 1] -> restored ``(B, T, 3, H, W)``.

        ``stage_hook(i, feat)`` (optional) replaces the features after stage ``i`` in 1..4; the
        returned tensor must keep the shape ``(B, C_i, T, H_i, W_i)``.
        ``residual_base`` (optional, ``x``'s shape) is what the body's residual is added to,
        instead of ``x`` itself (official VRT): e.g. a non-learned spike reading of the frames.
        """
        if residual_base is not None and residual_base.shape != x.shape:
            raise ValueError(f"residual_base must have the input's shape {tuple(x.shape)}, got {tuple(residual_base.shape)}")
        self.check_input(x)
        x_lq = x
        flows_backward, flows_forward = self.get_flows(x)
        x_backward, x_forward = self.get_aligned_images(x, flows_backward[0], flows_forward[0])
        x = self.conv_first(torch.cat([x, x_backward, x_forward], 2).transpose(1, 2))
        features = self.forward_features(x, flows_backward, flows_forward, stage_hook)
        x = x + self.conv_after_body(features.transpose(1, 4)).transpose(1, 4)
        return self.conv_last(x).transpose(1, 2) + (x_lq if residual_base is None else residual_base)

    def get_flows(self, x: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        """SpyNet flows between neighbours at scales 1, 1/2, 1/4, 1/8, each ``(B, T-1, 2, H_s, W_s)``.

        ``backward[s][:, t]`` warps frame t+1 onto frame t; ``forward[s][:, t]`` warps t onto t+1.
        """
        b, n, c, h, w = x.shape
        x_1 = x[:, :-1].reshape(-1, c, h, w)
        x_2 = x[:, 1:].reshape(-1, c, h, w)
        shapes = [(b, n - 1, 2, h // 2**i, w // 2**i) for i in range(NUM_SCALES)]
        backward = [f.view(s) for f, s in zip(self.spynet(x_1, x_2), shapes)]
        forward = [f.view(s) for f, s in zip(self.spynet(x_2, x_1), shapes)]
        return backward, forward

    @staticmethod
    def get_aligned_images(x: Tensor, flows_backward: Tensor, flows_forward: Tensor) -> tuple[Tensor, Tensor]:
        """Neighbours warped onto each frame with ``nearest4``: two ``(B, T, 4C, H, W)`` (zeros at the ends)."""
        neighbours, _, flows = frame_pairs(x, flows_backward, flows_forward)  # one warp for all pairs
        return pairs_to_frames(flow_warp(neighbours, flows.permute(0, 2, 3, 1), "nearest4"), x.shape[0])

    def forward_features(
        self, x: Tensor, flows_backward: list[Tensor], flows_forward: list[Tensor], stage_hook: StageHook | None = None
    ) -> Tensor:
        """Stages 1-8 and the final norm: ``(B, C_0, T, H, W) -> (B, C_last, T, H, W)``."""
        skips: list[Tensor] = []
        for i in range(1, 5):
            x = getattr(self, f"stage{i}")(x, flows_backward[i - 1 :: 4], flows_forward[i - 1 :: 4])
            if stage_hook is not None:
                fused = stage_hook(i, x)
                if fused.shape != x.shape:
                    raise ValueError(f"stage_hook({i}, feat) must return shape {tuple(x.shape)}, got {tuple(fused.shape)}")
                x = fused
            skips.append(x)
        x1, x2, x3, x4 = skips
        x = self.stage5(x4, flows_backward[2::4], flows_forward[2::4])
        x = self.stage6(x + x3, flows_backward[1::4], flows_forward[1::4])
        x = self.stage7(x + x2, flows_backward[0::4], flows_forward[0::4])
        x = self.stage8(x + x1)
        return self.norm(x.transpose(1, 4)).transpose(1, 4)
