"""Overhead of TimingCallback at its default interval against the callback disabled.

The same Lightning training steps (a tiny VRTWithSpike on CPU, fixed random clips) run with the
callback enabled and disabled, interleaved (on/off, off/on, ...) and repeated in one process.
Wall time is taken from the first measured batch start to the last batch end, so the interval's
collect/write/log/console work is included. Prints ms/step per run, and the ratio of medians.

    PYTHONPATH=$PWD python benchmarks/timing_overhead.py [--model tiny] [--steps 60]
        [--repeats 3] [--warmup 5] [override ...]     # overrides: Hydra syntax, e.g. model.vrt.depths=[...]
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

from vrt_spike.models.vrt_spike import VRTWithSpike
from vrt_spike.timing.callback import TimingCallback

ROOT = Path(__file__).resolve().parents[1]
TRAINING_KEYS = ("compile", "pretrained", "freeze_backbone_steps")
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
    def __init__(self, model_kwargs: dict) -> None:
        super().__init__()
        self.net = VRTWithSpike(**model_kwargs)

    def training_step(self, batch, batch_idx):
        out = self.net(batch["blur"], batch["spike"])
        return (out - batch["sharp"]).abs().mean()

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=1e-4)


class Stopwatch(pl.Callback):
    """Wall time of the batches after `warmup` (registered after TimingCallback)."""

    def __init__(self, warmup: int) -> None:
        self.warmup, self.start, self.end, self.n = warmup, None, None, 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.fit_loop.total_batch_idx == self.warmup:
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.start is not None:
            self.end = time.perf_counter()
            self.n += 1

    @property
    def ms_per_step(self) -> float:
        return 1000 * (self.end - self.start) / self.n


def model_kwargs(model: str, overrides: list[str]) -> dict:
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(overrides=[f"+model={model}", "+data.num_bins=4", *overrides])
    kw = OmegaConf.to_container(cfg.model, resolve=True)
    return {k: v for k, v in kw.items() if k not in TRAINING_KEYS}


def run(kw: dict, enabled: bool, steps: int, warmup: int, root: Path) -> float:
    t, h, w = kw["vrt"]["img_size"]
    torch.manual_seed(0)
    module = Deblur(kw)
    watch = Stopwatch(warmup)
    trainer = pl.Trainer(
        accelerator="cpu", precision="32-true", max_steps=steps, default_root_dir=root,
        callbacks=[TimingCallback(enabled=enabled), watch], logger=pl.loggers.CSVLogger(root),
        enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False)
    loader = torch.utils.data.DataLoader(Clips(4, t, kw["num_bins"], h, w), batch_size=1)
    trainer.fit(module, loader)
    return watch.ms_per_step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="tiny", help="conf/model preset")
    ap.add_argument("--steps", type=int, default=3 * DEFAULT_INTERVAL + 5)
    ap.add_argument("--warmup", type=int, default=5, help="batches not measured at the start")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    kw = model_kwargs(args.model, args.overrides)
    print(f"model={args.model} {' '.join(args.overrides)} | img_size {kw['vrt']['img_size']} | "
          f"{args.steps} steps ({args.warmup} unmeasured) | interval {DEFAULT_INTERVAL} | "
          f"torch threads {torch.get_num_threads()}")
    times: dict[bool, list[float]] = {True: [], False: []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            order = (True, False) if r % 2 == 0 else (False, True)
            for enabled in order:
                ms = run(kw, enabled, args.steps, args.warmup, Path(tmp) / f"r{r}-{int(enabled)}")
                times[enabled].append(ms)
                print(f"repeat {r} timing {'on ' if enabled else 'off'}: {ms:8.2f} ms/step", flush=True)
    on, off = statistics.median(times[True]), statistics.median(times[False])
    print(f"median ms/step: on {on:.2f}, off {off:.2f}; ratio on/off = {on / off:.4f} "
          f"({100 * (on / off - 1):+.2f} %); min-ratio {min(times[True]) / min(times[False]):.4f}")


if __name__ == "__main__":
    main()
