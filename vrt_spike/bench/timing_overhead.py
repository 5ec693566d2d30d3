"""Overhead of TimingCallback at its default interval against the callback disabled.

The same Lightning training steps (the `model=tiny` VRTWithSpike on CPU, one torch thread,
fixed random clips at VRT's smallest input so the fixed per-step cost of the timer weighs most)
run with the callback enabled and disabled, interleaved (on/off, off/on, ...) and repeated in one
process. The measured window spans whole logging intervals (default: batches 1-40 with the
default interval 20), so the collect/write/log/console work is included. Both process CPU time
(robust when other jobs share the machine) and wall time are reported per run, with the ratio of
the medians.

    python -m vrt_spike.bench.timing_overhead [--model tiny] [--clip 2,40,40]
        [--repeats 3] [override ...]     # overrides: Hydra syntax, e.g. model.vrt.depths=[...]
"""
from __future__ import annotations

import argparse
import inspect
import statistics
import time
from pathlib import Path
import tempfile

import lightning.pytorch as pl
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from vrt_spike import PROJECT_ROOT
from vrt_spike.lit.module import build_net
from vrt_spike.timing.callback import TimingCallback

DEFAULT_INTERVAL = inspect.signature(TimingCallback).parameters["interval"].default


class Clips(torch.utils.data.Dataset):
    def __init__(self, n: int, t: int, k: int, h: int, w: int) -> None:
        g = torch.Generator().manual_seed(0)
        self.items = [{"blur": torch.rand(t, 3, h, w, generator=g),
                       "sharp": torch.rand(t, 3, h, w, generator=g),
                       "spike": torch.rand(t, k, h, w, generator=g)} for _ in range(n)]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        return self.items[i]


class Deblur(pl.LightningModule):
    def __init__(self, model_cfg: dict) -> None:
        super().__init__()
        self.net = build_net(model_cfg)

    def training_step(self, batch, batch_idx):
        out = self.net(batch["blur"], batch["spike"])
        return (out - batch["sharp"]).abs().mean()

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=1e-4)


class Stopwatch(pl.Callback):
    """CPU and wall time of the batches after `warmup` (registered after TimingCallback, so a
    batch's end includes the timing callback's interval work)."""

    def __init__(self, warmup: int) -> None:
        self.warmup, self.n = warmup, 0
        self.start: tuple[float, float] | None = None
        self.end: tuple[float, float] | None = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.fit_loop.total_batch_idx == self.warmup:
            self.start = (time.process_time(), time.perf_counter())

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.start is not None:
            self.end = (time.process_time(), time.perf_counter())
            self.n += 1

    def ms_per_step(self) -> tuple[float, float]:
        return tuple(1000 * (e - s) / self.n for s, e in zip(self.start, self.end))


def model_config(model: str, overrides: list[str]) -> dict:
    with initialize_config_dir(config_dir=str(PROJECT_ROOT / "conf"), version_base="1.3"):
        cfg = compose(overrides=[f"+model={model}", "+data.num_bins=4", "+data.sharp_instant=0.5625",
                                 "+data.sharp_width=0.125", *overrides])
    return OmegaConf.to_container(cfg.model, resolve=True)


def run(model_cfg: dict, enabled: bool, steps: int, warmup: int, root: Path) -> tuple[float, float]:
    t, h, w = model_cfg["vrt"]["img_size"]
    torch.manual_seed(0)
    module = Deblur(model_cfg)
    watch = Stopwatch(warmup)
    trainer = pl.Trainer(
        accelerator="cpu", precision="32-true", max_steps=steps, default_root_dir=root,
        callbacks=[TimingCallback(enabled=enabled), watch], logger=pl.loggers.CSVLogger(root),
        enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False)
    loader = torch.utils.data.DataLoader(Clips(4, t, model_cfg["num_bins"], h, w), batch_size=1)
    trainer.fit(module, loader)
    return watch.ms_per_step()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="tiny", help="conf/model preset")
    ap.add_argument("--clip", default="2,40,40", help="T,H,W of the training clips")
    ap.add_argument("--intervals", type=int, default=2, help="logging intervals measured")
    ap.add_argument("--warmup", type=int, default=1, help="batches not measured at the start")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    torch.set_num_threads(1)
    model_cfg = model_config(args.model, [f"model.vrt.img_size=[{args.clip}]", *args.overrides])
    steps = args.warmup + args.intervals * DEFAULT_INTERVAL
    print(f"model={args.model} {' '.join(args.overrides)} | clip (T,H,W) {model_cfg['vrt']['img_size']} | "
          f"{steps} steps, {steps - args.warmup} measured | interval {DEFAULT_INTERVAL} | "
          f"torch threads {torch.get_num_threads()}")
    cpu: dict[bool, list[float]] = {True: [], False: []}
    wall: dict[bool, list[float]] = {True: [], False: []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            order = (True, False) if r % 2 == 0 else (False, True)
            for enabled in order:
                c, w = run(model_cfg, enabled, steps, args.warmup, Path(tmp) / f"r{r}-{int(enabled)}")
                cpu[enabled].append(c)
                wall[enabled].append(w)
                print(f"repeat {r} timing {'on ' if enabled else 'off'}: {c:8.2f} ms/step CPU, "
                      f"{w:8.2f} ms/step wall", flush=True)
    for name, d in (("CPU", cpu), ("wall", wall)):
        on, off = statistics.median(d[True]), statistics.median(d[False])
        print(f"{name}: median ms/step on {on:.2f}, off {off:.2f}; ratio on/off = {on / off:.4f} "
              f"({100 * (on / off - 1):+.2f} %)")


if __name__ == "__main__":
    main()
