"""Toy networks with the contract's submodule names, for timing tests (tiny, CPU)."""
from __future__ import annotations

import time

import pytest
import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

C, T, H, W, K = 4, 2, 8, 8, 3


class SleepGrad(torch.autograd.Function):
    """Identity whose backward sleeps: a known cost inside backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, ms: float) -> torch.Tensor:
        ctx.ms = ms
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        time.sleep(ctx.ms / 1000)
        return grad, None


class Unit(nn.Module):
    """1x1x1 conv over (B, C, T, H, W) that can sleep in forward and in backward."""

    def __init__(self, c: int = C) -> None:
        super().__init__()
        self.proj = nn.Conv3d(c, c, 1)
        self.sleep_ms = 0.0
        self.backward_sleep_ms = 0.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.sleep_ms:
            time.sleep(self.sleep_ms / 1000)
        y = self.proj(x)
        if self.backward_sleep_ms:
            y = SleepGrad.apply(y, self.backward_sleep_ms)
        return y


class Block(nn.Module):
    """Attention-like + FFN-like halves; each optionally checkpointed like VRT's TMSA."""

    def __init__(self, use_checkpoint_attn: bool = False, reentrant: bool = False) -> None:
        super().__init__()
        self.attn = Unit()
        self.mlp = Unit()
        self.use_checkpoint_attn = use_checkpoint_attn
        self.reentrant = reentrant

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.use_checkpoint_attn and torch.is_grad_enabled():
            x = x + checkpoint(self.attn, x, use_reentrant=self.reentrant)
        else:
            x = x + self.attn(x)
        return x + self.mlp(x)


class Stage(nn.Module):
    def __init__(self, **block_kw) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([Block(**block_kw), Block(**block_kw)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for b in self.blocks:
            x = b(x)
        return x


class ToyVRT(nn.Module):
    """`spynet`, `stage1`..`stage8`; `stage_hook(i, feat)` after stages 1-4 like the contract."""

    def __init__(self, **block_kw) -> None:
        super().__init__()
        self.conv_first = nn.Conv3d(3, C, 1)
        self.spynet = Unit(3)
        for i in range(1, 8):
            self.add_module(f"stage{i}", Stage(**block_kw))
        self.stage8 = nn.Sequential(Unit(), Unit())
        self.conv_last = nn.Conv3d(C, 3, 1)

    def forward(self, x: torch.Tensor, stage_hook=None) -> torch.Tensor:
        x5 = x.transpose(1, 2)  # (B, 3, T, H, W)
        flow = self.spynet(x5)
        feat = self.conv_first(x5 + 0.1 * flow)
        for i in range(1, 8):
            feat = getattr(self, f"stage{i}")(feat)
            if stage_hook is not None and i <= 4:
                feat = stage_hook(i, feat)
        feat = self.stage8(feat)
        return (x5 + self.conv_last(feat)).transpose(1, 2)


class ToyScales(nn.Module):
    def __init__(self, in_ch: int = C, use_checkpoint: bool = False) -> None:
        super().__init__()
        self.scale1 = Unit(in_ch) if in_ch == C else nn.Conv3d(in_ch, C, 1)
        for i in range(2, 5):
            self.add_module(f"scale{i}", Unit())
        self.use_checkpoint = use_checkpoint


class ToySpikeEncoder(ToyScales):
    def forward(self, spike: torch.Tensor) -> list[torch.Tensor]:
        x = self.scale1(spike.transpose(1, 2))
        feats = [x]
        for i in range(2, 5):
            x = getattr(self, f"scale{i}")(x)
            feats.append(x)
        return feats


class ToySpikeTSA(ToyScales):
    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        out = []
        for i, f in enumerate(feats, start=1):
            scale = getattr(self, f"scale{i}")
            if self.use_checkpoint and torch.is_grad_enabled():
                out.append(f + checkpoint(scale, f, use_reentrant=False))
            else:
                out.append(f + scale(f))
        return out


class FuseStage(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.mix = Unit()

    def forward(self, rgb: torch.Tensor, spike: torch.Tensor) -> torch.Tensor:
        return rgb + self.mix(spike)


class ToyFusion(nn.Module):
    def __init__(self, stages=(1, 2, 3, 4)) -> None:
        super().__init__()
        for i in stages:
            self.add_module(f"stage{i}", FuseStage())

    def forward(self, rgb: torch.Tensor, spike: torch.Tensor, stage: int) -> torch.Tensor:
        return getattr(self, f"stage{stage}")(rgb, spike)


class ToyVRTWithSpike(nn.Module):
    def __init__(self, use_spike: bool = True, checkpoint_attn: bool = False,
                 reentrant: bool = False, checkpoint_tsa: bool = False) -> None:
        super().__init__()
        self.vrt = ToyVRT(use_checkpoint_attn=checkpoint_attn, reentrant=reentrant)
        self.use_spike = use_spike
        if use_spike:
            self.spike_encoder = ToySpikeEncoder(K)
            self.spike_tsa = ToySpikeTSA(use_checkpoint=checkpoint_tsa)
            self.fusion = ToyFusion()

    def forward(self, rgb: torch.Tensor, spike: torch.Tensor | None = None) -> torch.Tensor:
        if not self.use_spike:
            return self.vrt(rgb)
        feats = self.spike_tsa(self.spike_encoder(spike))
        return self.vrt(rgb, stage_hook=lambda i, f: self.fusion(f, feats[i - 1], i))


def toy_batch(b: int = 1) -> dict[str, torch.Tensor]:
    return {"blur": torch.rand(b, T, 3, H, W), "sharp": torch.rand(b, T, 3, H, W),
            "spike": torch.rand(b, T, K, H, W)}


def train_steps(net: nn.Module, timer, steps: int = 2) -> list[tuple]:
    """Plain training loop instrumented like the contract's example."""
    opt = torch.optim.SGD(net.parameters(), lr=1e-3)
    for _ in range(steps):
        batch = toy_batch()
        with timer.region("data"):
            batch = {k: v.clone() for k, v in batch.items()}
        out = net(batch["blur"], batch["spike"])
        loss = (out - batch["sharp"]).abs().mean()
        with timer.region("backward"):
            loss.backward()
        with timer.region("optimizer_step"):
            opt.step()
            opt.zero_grad()
        timer.end_step()
    return timer.collect()


@pytest.fixture
def toy_net_cls():
    return ToyVRTWithSpike


@pytest.fixture
def run_steps():
    return train_steps


@pytest.fixture
def make_batch():
    return toy_batch


class FakeClock:
    """Deterministic time: every clock read advances 1 µs, `time.sleep` advances exactly."""

    def __init__(self) -> None:
        self.ns = 0

    def perf_counter_ns(self) -> int:
        self.ns += 1_000
        return self.ns

    def sleep(self, seconds: float) -> None:
        self.ns += round(seconds * 1e9)


@pytest.fixture
def fake_clock(monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(time, "perf_counter_ns", clock.perf_counter_ns)
    monkeypatch.setattr(time, "sleep", clock.sleep)
    return clock


def all_hooks(net: nn.Module) -> list:
    """Every hook the timer could have registered on `net`, its submodules and parameters."""
    found = []
    for m in net.modules():
        for d in (m._forward_hooks, m._forward_pre_hooks, m._backward_hooks,
                  m._backward_pre_hooks, m._forward_hooks_always_called):
            found += list(d.values())
    for p in net.parameters():
        found += list((p._post_accumulate_grad_hooks or {}).values())
        found += list((p._backward_hooks or {}).values())
    glob = nn.modules.module
    found += list(glob._global_forward_hooks.values()) + list(glob._global_forward_pre_hooks.values())
    return found


@pytest.fixture
def hooks_of():
    return all_hooks


@pytest.fixture(autouse=True)
def _one_thread():
    """Toy convs are tiny: intra-op threads only add contention on the shared 2-core box."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
