"""Optimizers, schedule, freezing, non-finite steps and 2-step fits of 8-bit AdamW and of bf16."""
from __future__ import annotations

import math
from pathlib import Path

import lightning as L
import pytest
import torch
from train_support import tiny_overrides
from torch.utils.data import DataLoader

from vrt_spike.lit.module import DeblurModule, build_net
from vrt_spike.lit.optim import build_optimizer, build_scheduler, cosine_with_warmup
from vrt_spike.lit.training import train


@pytest.fixture(scope="module")
def tiny_cfg(compose_cfg):
    return compose_cfg("train", ["model=tiny", "paths.output_dir=/tmp/unused"])


def test_flow_group_gets_lr_multiplier(tiny_cfg) -> None:
    net = build_net(tiny_cfg.model)
    opt = build_optimizer(net, {**tiny_cfg.optim, "lr": 1e-3, "flow_lr_mult": 0.125})
    groups = {g["name"]: g for g in opt.param_groups}
    assert groups["main"]["lr"] == pytest.approx(1e-3) and groups["flow"]["lr"] == pytest.approx(1.25e-4)
    names = {id(p): n for n, p in net.named_parameters()}
    flow = [names[id(p)] for p in groups["flow"]["params"]]
    assert flow and all("spynet" in n or "deform" in n for n in flow)
    assert any(n.startswith("vrt.spynet.") for n in flow) and any("pa_deform" in n for n in flow)
    assert not any("spynet" in names[id(p)] or "deform" in names[id(p)] for p in groups["main"]["params"])
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(net.parameters()))


def test_adamw8bit_states_are_uint8_on_cpu(tiny_cfg) -> None:
    net = build_net(tiny_cfg.model)
    opt = build_optimizer(net, {**tiny_cfg.optim, "name": "adamw8bit", "paged": "auto"})
    assert type(opt).__name__ == "AdamW8bit"
    rgb, spike = torch.rand(1, 2, 3, 40, 40), torch.rand(1, 2, int(tiny_cfg.model.num_bins), 40, 40)
    net(rgb, spike).mean().backward()
    opt.step()
    big = [p for g in opt.param_groups for p in g["params"] if p.numel() >= 4096 and p in opt.state]
    assert big
    for p in big:
        assert opt.state[p]["state1"].dtype == torch.uint8 and opt.state[p]["state2"].dtype == torch.uint8
    with pytest.raises(ValueError, match="optim.paged=true needs the network on CUDA"):
        build_optimizer(net, {**tiny_cfg.optim, "name": "adamw8bit", "paged": True})


def test_cosine_schedule_with_warmup() -> None:
    assert cosine_with_warmup(0, 100, 10, 0.0) == pytest.approx(0.1)
    assert cosine_with_warmup(9, 100, 10, 0.0) == pytest.approx(1.0)
    assert cosine_with_warmup(10, 100, 10, 0.0) == pytest.approx(1.0)
    assert cosine_with_warmup(55, 100, 10, 0.1) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert cosine_with_warmup(100, 100, 10, 0.1) == pytest.approx(0.1)
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = build_scheduler(opt, {"warmup_steps": 2, "min_lr_ratio": 0.0}, total_steps=4)
    lrs = []
    for _ in range(4):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([0.5, 1.0, 1.0, 0.5])


class _Loader(L.LightningDataModule):
    def __init__(self, batches):
        super().__init__()
        self.batches = batches

    def train_dataloader(self):
        return DataLoader(self.batches, batch_size=None)


def _batch(k: int, nan: bool = False) -> dict:
    # The target carries the NaN: VRT rejects a NaN *input* on CPU with a ValueError before any
    # loss exists.
    sharp = torch.rand(1, 2, 3, 40, 40)
    if nan:
        sharp[0, 0, 0, 0, 0] = float("nan")
    return {"blur": torch.rand(1, 2, 3, 40, 40), "sharp": sharp, "spike": torch.rand(1, 2, k, 40, 40),
            "clip": ["c"], "frame_start": torch.zeros(1, dtype=torch.long)}


def _trainer(tmp_path: Path, steps: int, log_every_n_steps: int = 50) -> L.Trainer:
    return L.Trainer(accelerator="cpu", max_steps=steps, logger=False, enable_checkpointing=False,
                     enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
                     limit_val_batches=0, log_every_n_steps=log_every_n_steps)


def test_nonfinite_loss_skips_steps_then_aborts(tiny_cfg, tmp_path: Path) -> None:
    k = int(tiny_cfg.model.num_bins)
    module = DeblurModule(tiny_cfg.model, tiny_cfg.optim, tiny_cfg.scheduler, max_nonfinite_steps=2)
    before = {n: p.detach().clone() for n, p in module.net.named_parameters()}
    batches = [_batch(k, nan=True), _batch(k), _batch(k, nan=True), _batch(k, nan=True)]
    with pytest.raises(RuntimeError, match=r"2 non-finite losses in a row \(max_nonfinite_steps=2\) by step 4"):
        _trainer(tmp_path, steps=10, log_every_n_steps=1).fit(module, datamodule=_Loader(batches))
    assert module.skipped_steps == 3
    changed = [n for n, p in module.net.named_parameters() if not torch.equal(p, before[n])]
    assert changed  # the one finite batch trained


class _Snapshot(L.Callback):
    """Parameters after every optimizer step, and how many SpyNet and VRT parameters had a gradient."""

    def __init__(self) -> None:
        self.after_step: list[dict[str, torch.Tensor]] = []
        self.flow_grads: list[int] = []
        self.vrt_grads: list[int] = []

    def on_after_backward(self, trainer, pl_module) -> None:
        grads = {n for n, p in pl_module.net.named_parameters() if p.grad is not None}
        self.flow_grads.append(sum("spynet" in n for n in grads))
        self.vrt_grads.append(sum(n.startswith("vrt.") for n in grads))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.after_step.append({n: p.detach().clone() for n, p in pl_module.net.named_parameters()})


def _fit_with_freezing(tiny_cfg, tmp_path: Path, steps: int, flow_freeze_steps: int, freeze_backbone_steps: int = 0):
    k = int(tiny_cfg.model.num_bins)
    optim = {**tiny_cfg.optim, "flow_freeze_steps": flow_freeze_steps}
    module = DeblurModule({**tiny_cfg.model, "freeze_backbone_steps": freeze_backbone_steps}, optim,
                          {"warmup_steps": 0, "min_lr_ratio": 1.0})
    start = {n: p.detach().clone() for n, p in module.net.named_parameters()}
    snap = _Snapshot()
    trainer = _trainer(tmp_path, steps=steps)
    trainer.callbacks.append(snap)
    trainer.fit(module, datamodule=_Loader([_batch(k)] * steps))

    def moved(state, pick):
        return sum(not torch.equal(state[n], start[n]) for n in start if pick(n))

    return module, trainer, snap, moved


FLOW = lambda n: "spynet" in n or "deform" in n  # noqa: E731


def test_flow_and_backbone_freeze_for_part_of_the_fit(tiny_cfg, tmp_path: Path) -> None:
    module, _, snap, moved = _fit_with_freezing(tiny_cfg, tmp_path, steps=3, flow_freeze_steps=2, freeze_backbone_steps=1)
    backbone = lambda n: n.startswith("vrt.") and not FLOW(n)  # noqa: E731
    spike = lambda n: not n.startswith("vrt.")  # noqa: E731
    assert moved(snap.after_step[0], spike) > 0            # spike branch trains from step 0
    assert moved(snap.after_step[0], backbone) == 0        # model.freeze_backbone_steps=1
    assert moved(snap.after_step[1], backbone) > 0         # ... then the backbone trains
    assert moved(snap.after_step[1], FLOW) == 0            # optim.flow_freeze_steps=2
    assert moved(snap.after_step[2], FLOW) > 0             # ... then the flow trains
    # Frozen for part of the fit, gradients are computed (DDP buckets stay fixed) and dropped.
    assert snap.flow_grads[0] > 0


def test_flow_frozen_for_the_whole_fit_computes_no_flow_gradient(tiny_cfg, tmp_path: Path) -> None:
    module, trainer, snap, moved = _fit_with_freezing(tiny_cfg, tmp_path, steps=2, flow_freeze_steps=2)
    assert moved(snap.after_step[-1], FLOW) == 0
    assert moved(snap.after_step[-1], lambda n: not FLOW(n)) > 0
    assert snap.flow_grads == [0, 0]  # SpyNet's backward never ran
    spynet = [p for n, p in module.net.named_parameters() if "spynet" in n]
    assert spynet and not any(p.requires_grad for p in spynet)
    in_optimizer = {id(p) for g in trainer.optimizers[0].param_groups for p in g["params"]}
    assert not any(id(p) in in_optimizer for p in spynet)


def test_backbone_frozen_for_the_whole_fit_computes_no_backbone_gradient(tiny_cfg, tmp_path: Path) -> None:
    """The same path as the flow's: model.freeze_backbone_steps >= trainer.max_steps sets VRT's
    requires_grad=False before the fit; the spike branch trains through the frozen backbone."""
    module, trainer, snap, moved = _fit_with_freezing(tiny_cfg, tmp_path, steps=2, flow_freeze_steps=0,
                                                      freeze_backbone_steps=2)
    assert moved(snap.after_step[-1], lambda n: n.startswith("vrt.")) == 0
    assert moved(snap.after_step[-1], lambda n: not n.startswith("vrt.")) > 0
    assert snap.vrt_grads == [0, 0]  # VRT's weight gradients were never computed
    vrt = list(module.net.vrt.parameters())
    assert not any(p.requires_grad for p in vrt)
    in_optimizer = {id(p) for g in trainer.optimizers[0].param_groups for p in g["params"]}
    assert in_optimizer and not any(id(p) in in_optimizer for p in vrt)


# the fp32 AdamW fit is every other tiny fit's (test_train_evaluate.py, test_train_floor.py, ...)
@pytest.mark.parametrize(("optim", "precision"), [("adamw8bit", "32"), ("adamw", "bf16-mixed")])
def test_two_step_fit(compose_cfg, synthetic_root: Path, tmp_path: Path, optim: str, precision: str) -> None:
    cfg = compose_cfg("train", [*tiny_overrides(synthetic_root), f"optim={optim}", f"trainer.precision={precision}",
                                f"paths.output_dir={tmp_path}", "trainer.limit_val_batches=1"])
    # two threads at least: torch 2.14.1's oneDNN bf16 Conv3d weight gradient is inf on one thread (README,
    # Troubleshooting), and a pytest-xdist worker computes on one (tests/conftest.py)
    threads = torch.get_num_threads()
    torch.set_num_threads(max(threads, 2))
    try:
        summary = train(cfg)
    finally:
        torch.set_num_threads(threads)
    assert summary["steps"] == 2 and summary["status"] == "ok" and summary["skipped_steps"] == 0
    assert math.isfinite(summary["val_psnr"]) and 5 < summary["val_psnr_input"] < 60
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file() and (tmp_path / "summary.json").is_file()
    assert (tmp_path / "timing").is_dir() and (tmp_path / "metrics.csv").is_file()
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 2 and ckpt["optimizer_states"]


def _guarded_step(opt: torch.optim.Optimizer, guard, params: list[torch.nn.Parameter], grad: float) -> None:
    for p in params:
        p.grad = torch.full_like(p, grad)
    guard.before_step(opt)
    opt.step()


@pytest.mark.parametrize("name", ["adamw", "adamw8bit"])
def test_nonfinite_step_is_skipped_on_the_device(tiny_cfg, name: str) -> None:
    from vrt_spike.lit.optim import NonFiniteStepGuard
    from host_syncs import HostSyncCounter

    net = build_net(tiny_cfg.model)
    opt = build_optimizer(net, {**tiny_cfg.optim, "name": name, "weight_decay": 0.1})
    params = [p for g in opt.param_groups for p in g["params"]]
    guard = NonFiniteStepGuard()
    _guarded_step(opt, guard, params, 0.5)  # a finite step: states exist
    before = [p.detach().clone() for p in params]
    states = {id(p): {k: v.clone() for k, v in opt.state[p].items() if torch.is_tensor(v)} for p in params}
    with HostSyncCounter() as syncs:
        _guarded_step(opt, guard, params, float("nan"))
        _guarded_step(opt, guard, params, float("inf"))
    assert syncs.count == 0  # decided on the device
    assert guard.counts() == (2, 2)
    assert all(torch.isfinite(p).all() for p in params)
    if name == "adamw":  # fused: the kernel skips; weights, moments and step count untouched
        assert opt.defaults["fused"] is True
        assert all(torch.equal(p, b) for p, b in zip(params, before))
        for p in params:
            for k, v in states[id(p)].items():
                assert torch.equal(opt.state[p][k], v), k
    _guarded_step(opt, guard, params, 0.5)
    assert guard.counts() == (2, 2)  # the run ended; the longest run is remembered
    assert not all(torch.equal(p, b) for p, b in zip(params, before))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_adamw_is_fused_on_cuda(tiny_cfg) -> None:
    net = build_net(tiny_cfg.model).cuda()
    opt = build_optimizer(net, tiny_cfg.optim)
    assert type(opt) is torch.optim.AdamW and opt.defaults["fused"] is True
    eight_bit = build_optimizer(net, {**tiny_cfg.optim, "name": "adamw8bit"})
    assert type(eight_bit).__name__ == "AdamW8bit"  # paged only when asked
    assert type(build_optimizer(net, {**tiny_cfg.optim, "name": "adamw8bit", "paged": True})).__name__ == "PagedAdamW8bit"
