"""TimingCallback in real Lightning fits of a toy network (CPU, deterministic clock)."""
from __future__ import annotations

import glob
import json
import time

import lightning.pytorch as pl
import pytest
import torch

from lightning.pytorch.loggers import Logger

from vrt_spike.timing.callback import TimingCallback
from vrt_spike.data.dataset import collate_samples
from vrt_spike.timing.table import read_rows, read_summary


class ToyData(torch.utils.data.Dataset):
    def __init__(self, make_batch, n: int = 8, load_ms: float = 5.0) -> None:
        self.make_batch, self.n, self.load_ms = make_batch, n, load_ms

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        time.sleep(self.load_ms / 1000)
        sample = {k: v[0] for k, v in self.make_batch().items()}
        sample["timings"] = {"read_png": 1.5, "decode_spike": 2.0 + i}
        return sample


class RecordingLogger(Logger):
    """Keeps every ``log_metrics`` call in memory."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[int, dict]] = []

    @property
    def name(self) -> str:
        return "recording"

    @property
    def version(self) -> int:
        return 0

    def log_metrics(self, metrics, step=None) -> None:
        self.calls.append((step, dict(metrics)))

    def log_hyperparams(self, params, *args, **kwargs) -> None:
        pass


class ToyLit(pl.LightningModule):
    def __init__(self, net, hooks_of=None, val_sleep_ms: float = 0.0) -> None:
        super().__init__()
        self.net = net
        self.hooks_of = hooks_of
        self.hook_counts: list[int] = []
        self.val_sleep_ms = val_sleep_ms

    def training_step(self, batch, batch_idx):
        if self.hooks_of is not None:
            self.hook_counts.append(len(self.hooks_of(self.net)))
        out = self.net(batch["blur"], batch["spike"])
        return (out - batch["sharp"]).abs().mean()

    def validation_step(self, batch, batch_idx):
        time.sleep(self.val_sleep_ms / 1000)
        out = self.net(batch["blur"], batch["spike"])
        self.log("val/l1", (out - batch["sharp"]).abs().mean(), batch_size=out.shape[0])

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=1e-3)


def fit(tmp_path, module, callback, make_batch, logger=False, epochs=2):
    dl = torch.utils.data.DataLoader(ToyData(make_batch), batch_size=2, collate_fn=collate_samples)
    trainer = pl.Trainer(
        max_epochs=epochs, accelerator="cpu", default_root_dir=tmp_path, callbacks=[callback],
        logger=logger, enable_progress_bar=False, enable_model_summary=False,
        enable_checkpointing=False, limit_val_batches=1, val_check_interval=2,
        num_sanity_val_steps=1)
    trainer.fit(module, dl, dl)
    return trainer


def test_fit_writes_table_logs_and_console(tmp_path, toy_net_cls, make_batch, fake_clock, capsys):
    net = toy_net_cls()
    net.vrt.stage8[0].sleep_ms = 20
    cb = TimingCallback(interval=3, console="plain", flops_per_step=2e9, peak_flops=1e12)
    logger = RecordingLogger()
    fit(tmp_path, ToyLit(net, val_sleep_ms=1000), cb, make_batch, logger=logger)
    rows = read_rows(tmp_path)
    assert len(list((tmp_path / "timing" / "rows").glob("part-*.csv"))) == 3  # steps 0-2, 3-5, 6-7
    steps = sorted({r.step for r in rows})
    assert steps == list(range(8))  # 2 epochs x 4 batches; validation is no step
    assert {r.rank for r in rows} == {0}
    assert {r.epoch for r in rows if r.step < 4} == {0} and {r.epoch for r in rows if r.step >= 4} == {1}
    by = {(r.step, r.region): r.ms for r in rows}
    for step in steps:
        assert 20 <= by[step, "forward.vrt.stage8"] < 21
        assert 10 <= by[step, "data"] < 11  # two samples x 5 ms in the loader (same process)
        assert by[step, "step"] < 40  # the 1000 ms validation never lands in a step
        assert by[step, "data.read_png"] == 3.0  # per-sample ms summed over the batch
        for region in ("backward", "optimizer_step", "backward.vrt.stage8", "forward.fusion.stage4"):
            assert (step, region) in by
    assert by[1, "data.decode_spike"] == (2 + 2) + (2 + 3)
    summary = {s.region: s for s in read_summary(tmp_path)}
    assert summary["step"].n == 7  # warm-up step 0 left out
    timing_logs = [(step, m) for step, m in logger.calls if "timing/step" in m]
    assert [step for step, _ in timing_logs] == [3, 6]  # global step after each full interval
    metrics = timing_logs[-1][1]
    assert 20 <= float(metrics["timing/forward.vrt.stage8"]) < 21
    step_ms = [by[s, "step"] for s in (3, 4, 5)]  # the last logged interval
    assert float(metrics["timing/step"]) == pytest.approx(sum(step_ms) / 3, rel=1e-5)
    assert float(metrics["timing/samples_per_s"]) == pytest.approx(6 / (sum(step_ms) / 1000), rel=1e-5)
    meta = json.loads((tmp_path / "timing" / "meta.json").read_text())
    mean_step_s = sum(by[s, "step"] for s in range(6, 8)) / 2 / 1000
    assert meta["mfu"] == pytest.approx(2e9 / mean_step_s / 1e12, rel=1e-5)
    assert meta["world_size"] == 1 and meta["batch_size"] == 2
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("[timing]")]
    assert len(lines) == 3 and "forward.vrt.stage8" in lines[0] and "MFU" in lines[0]
    text = cb.summary()
    assert text.startswith("Timing summary (7 steps after 1 warm-up, 1 process(es))")
    assert "forward.vrt.stage8" in text.splitlines()[2]  # the largest exclusive region first


def test_disabled_callback_is_inert(tmp_path, toy_net_cls, make_batch, hooks_of):
    lit = ToyLit(toy_net_cls(), hooks_of=hooks_of)
    cb = TimingCallback(enabled=False)
    fit(tmp_path, lit, cb, make_batch, epochs=1)
    assert lit.hook_counts == [0] * 4
    assert not (tmp_path / "timing").exists()
    assert cb.summary() == "timing: disabled"
    # Enabled: hooks live during the fit and are gone afterwards.
    lit2 = ToyLit(toy_net_cls(), hooks_of=hooks_of)
    fit(tmp_path / "on", lit2, TimingCallback(console="off"), make_batch, epochs=1)
    assert min(lit2.hook_counts) > 0 and hooks_of(lit2.net) == []


def test_breakdown_off_times_the_step_alone(tmp_path, toy_net_cls, make_batch, hooks_of):
    """`breakdown=False`: no hook on the network and no region, only the step (what the breakdown costs
    is the difference: `python -m vrt_spike.bench -m bench.breakdown=false,true`)."""
    lit = ToyLit(toy_net_cls(), hooks_of=hooks_of)
    cb = TimingCallback(console="off", breakdown=False, warmup=1)
    fit(tmp_path, lit, cb, make_batch, epochs=1)
    assert lit.hook_counts == [0] * 4
    assert {r.region for r in read_rows(tmp_path)} == {"step"}
    step = cb.step_stats()
    assert step.n == 3 and step.p10_ms <= step.p50_ms <= step.p90_ms and cb.samples_per_s > 0


def test_wandb_table_and_bar_chart(tmp_path, toy_net_cls, make_batch):
    from lightning.pytorch.loggers import WandbLogger

    logger = WandbLogger(project="timing-test", save_dir=str(tmp_path), offline=True)
    fit(tmp_path, ToyLit(toy_net_cls()), TimingCallback(interval=2, console="off"), make_batch,
        logger=logger, epochs=1)
    logger.experiment.finish()
    tables = glob.glob(str(tmp_path / "wandb" / "offline-run-*" / "files" / "media" / "table" / "timing" / "*.table.json"))
    summary = [t for t in tables if "summary" in t]
    assert summary, tables
    data = json.loads(open(summary[-1]).read())
    assert data["columns"] == ["region", "mean_ms", "p90_ms", "self_ms", "share_of_step"]
    assert "forward.vrt.stage8" in {row[0] for row in data["data"]}
    assert any("top_regions" in t for t in tables)  # the bar chart's table


def test_bad_arguments_and_module():
    with pytest.raises(ValueError, match="both flops_per_step and peak_flops"):
        TimingCallback(flops_per_step=1e9)
    with pytest.raises(ValueError, match="interval must be >= 1, got 0"):
        TimingCallback(interval=0)
    cb = TimingCallback()
    with pytest.raises(AttributeError, match=r"network at `.net`"):
        cb.on_fit_start(None, pl.LightningModule())


@pytest.mark.slow  # torch.compile is no mission path; tracing the toy network costs ~5 s
def test_compiled_network_gets_whole_step_regions_and_no_hook(tmp_path, toy_net_cls, make_batch, hooks_of):
    """Under model.compile no timer hook sits inside the compiled graph: forward, backward,
    optimizer_step and data are timed from outside, and the table names what it cannot see."""
    net = toy_net_cls()
    net.vrt.stage8[0].sleep_ms = 20
    net.compile(backend="eager")  # in place, as DeblurModule compiles (the backend does not matter here)
    lit = ToyLit(net, hooks_of=hooks_of)
    cb = TimingCallback(interval=2, console="off")
    fit(tmp_path, lit, cb, make_batch, epochs=1)
    assert lit.hook_counts == [0] * 4
    regions = {r.region for r in read_rows(tmp_path)}
    assert {"step", "data", "forward", "backward", "optimizer_step", "data.read_png"} <= regions
    assert not any(r.startswith(("forward.", "backward.")) for r in regions), regions
    by = {(r.step, r.region): r.ms for r in read_rows(tmp_path)}
    assert all(by[s, "forward"] >= 20 for s in range(4))  # stage 8's 20 ms sleep is inside it
    meta = json.loads((tmp_path / "timing" / "meta.json").read_text())
    assert meta["compiled"] is True
    assert {"forward.vrt.stage8", "backward.vrt.stage8", "forward.fusion.stage4"} <= set(meta["regions_not_seen"])
    assert "compiled network" in cb.summary() and "model.compile=false" in cb.summary()


def test_tensor_timings_are_refused_with_the_reason(tmp_path, toy_net_cls):
    from vrt_spike.timing.callback import _loader_ms

    assert _loader_ms({"read_png": [1.5, 2.0]}, 2) == {"read_png": 3.5}
    with pytest.raises(ValueError, match=r"batch\['timings'\]\['read_png'\] must be a list of 2 per-sample ms \(host floats"):
        _loader_ms({"read_png": torch.tensor([1.5, 2.0])}, 2)
    with pytest.raises(ValueError, match="must be a list of 2"):
        _loader_ms({"read_png": [1.5]}, 2)
