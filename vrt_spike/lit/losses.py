"""Restoration losses: Charbonnier (the VRT training loss) and an optional VGG perceptual term."""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch
from einops import rearrange
from torch import Tensor, nn

__all__ = ["CharbonnierLoss", "PerceptualLoss", "RestorationLoss"]

# torchvision's VGG19 `features` indices of relu1_2, relu2_2, relu3_4, relu4_4, relu5_4.
_VGG19_LAYERS = {"relu1_2": 3, "relu2_2": 8, "relu3_4": 17, "relu4_4": 26, "relu5_4": 35}
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


class CharbonnierLoss(nn.Module):
    """``mean(sqrt((x - y)^2 + eps^2))``: a differentiable L1 (KAIR's VRT loss, eps 1e-3)."""

    def __init__(self, eps: float = 1e-3) -> None:
        super().__init__()
        if eps <= 0:
            raise ValueError(f"loss.charbonnier_eps must be > 0, got {eps}")
        self.eps = float(eps)

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        """``pred``, ``target``: same shape, e.g. ``(B, T, 3, H, W)`` -> scalar."""
        diff = pred.float() - target.float()
        return torch.sqrt(diff * diff + self.eps**2).mean()


class PerceptualLoss(nn.Module):
    """L1 between frozen VGG19 features of prediction and target.

    The weights come from a local file (torchvision's ``vgg19`` state dict, e.g.
    ``vgg19-dcbb9e9d.pth``): nothing is downloaded.
    """

    def __init__(self, weights_path: str | os.PathLike | None, layers: Sequence[str] = ("relu1_2", "relu2_2", "relu3_4")) -> None:
        super().__init__()
        from torchvision.models import vgg19

        if weights_path is None:
            raise ValueError("loss.perceptual_weight > 0 needs loss.perceptual_weights: a local path to torchvision's "
                             "VGG19 state dict (e.g. vgg19-dcbb9e9d.pth); got null (no downloads at run time)")
        path = Path(weights_path)
        if not path.is_file():
            raise FileNotFoundError(f"loss.perceptual_weights: no file at {path}")
        unknown = [name for name in layers if name not in _VGG19_LAYERS]
        if unknown:
            raise ValueError(f"loss.perceptual_layers: unknown {unknown}; expected some of {list(_VGG19_LAYERS)}")
        net = vgg19(weights=None)
        net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        last = max(_VGG19_LAYERS[name] for name in layers)
        self.features = net.features[: last + 1].eval().requires_grad_(False)
        self.taps = sorted(_VGG19_LAYERS[name] for name in layers)
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True) -> PerceptualLoss:  # the VGG stays in eval mode
        super().train(mode)
        self.features.eval()
        return self

    def _features(self, x: Tensor) -> list[Tensor]:
        x = (x - self.mean) / self.std
        out = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self.taps:
                out.append(x)
        return out

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        """``(B, T, 3, H, W)`` clips -> scalar (frames are independent images)."""
        pred = rearrange(pred.float(), "b t c h w -> (b t) c h w")
        target = rearrange(target.float(), "b t c h w -> (b t) c h w")
        loss = pred.new_zeros(())
        for fp, ft in zip(self._features(pred), self._features(target), strict=True):
            loss = loss + (fp - ft).abs().mean()
        return loss


class RestorationLoss(nn.Module):
    """Charbonnier plus ``perceptual_weight`` x perceptual (the latter only built when its weight > 0)."""

    def __init__(self, charbonnier_eps: float = 1e-3, perceptual_weight: float = 0.0,
                 perceptual_weights: str | None = None,
                 perceptual_layers: Sequence[str] = ("relu1_2", "relu2_2", "relu3_4")) -> None:
        super().__init__()
        self.charbonnier = CharbonnierLoss(charbonnier_eps)
        self.perceptual_weight = float(perceptual_weight)
        if self.perceptual_weight < 0:
            raise ValueError(f"loss.perceptual_weight must be >= 0, got {perceptual_weight}")
        self.perceptual = PerceptualLoss(perceptual_weights, perceptual_layers) if self.perceptual_weight > 0 else None

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        loss = self.charbonnier(pred, target)
        if self.perceptual is not None:
            loss = loss + self.perceptual_weight * self.perceptual(pred, target)
        return loss
