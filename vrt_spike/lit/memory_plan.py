"""Will it fit? What one training step of a composed config needs on one device, planned on the CPU.

    plan = plan_training_step(cfg)        # cfg: a composed conf/train.yaml
    print(plan_table(plan, cards_gib=(24, 48, 80, 141)))

How it is planned: fake tracing of the real step at the config's own sizes. The network is built
for real on the CPU (:func:`vrt_spike.lit.module.DeblurModule`, with the fit's freezes), its
parameters become fake tensors, and one training step as Lightning runs it (forward and loss under
the precision's autocast, backward) runs on fake inputs of the training batch's shape under
``FakeTensorMode``: every operator computes shapes and dtypes, no values, so a 1 x 6 x 256^2 step
of the baseline costs seconds of CPU and no memory. :class:`StorageLedger`, a dispatch mode under
the fake mode, counts the bytes of every storage an operator makes, from that operator until the
storage is freed (a weak reference: CPython frees it the moment the last tensor goes), so the
ledger holds what is live at every instant: the step's peak, the activations left when forward
ends (what backward needs) by the region that made them, and the backward's own peak.
Not small real traces scaled by pixels and frames: windows, padding, chunk budgets and the
alignment's batching make memory a step function of the shape, which only the shape itself shows.

The optimizer is planned the same way: the configured one (``build_optimizer``: fused AdamW or
bitsandbytes 8-bit) steps once on the fake network's zero gradients under a ledger, which gives
its states' bytes and its step's transient.

How a steady-state step is laid out in time (Lightning's automatic optimization: forward and loss,
``zero_grad(set_to_none=True)``, backward, optimizer step), each phase on top of the parameters,
the optimizer states and the batch:

    forward    + the previous step's gradients (freed only after the loss) + forward's live peak
    backward   + backward's live peak (saved activations, recomputation, activation gradients
                 and the parameter gradients built so far)
    optimizer  + all gradients + the optimizer step's transient

plus, under DDP, gradient buckets the size of the gradients. The plan is the CPU's operators: on
CUDA the attention and deformable-convolution kernels keep the same tensors for backward; what
the caching allocator adds (rounding, fragmentation) and the CUDA context are outside the plan and
inside ``memory.reserve_gb``. A compiled network (``model.compile``) is planned eager: inductor
usually keeps fewer activations, so the plan is an upper bound there.
"""
from __future__ import annotations

import contextlib
import weakref
from collections import defaultdict
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from vrt_spike.models.vrt.attention import clear_shape_caches
from vrt_spike.timing.clock import now_s
from vrt_spike.timing.regions import find_regions

__all__ = ["GIB", "StepPlan", "StorageLedger", "plan_training_step", "precision_dtypes", "plan_table"]

GIB = 2**30

# Storage categories of the ledger.
ACT, BACKWARD, GRAD, OPTIM, STATIC = "activation", "backward", "gradient", "optimizer", "static"


def precision_dtypes(precision: Any) -> tuple[torch.dtype, torch.dtype | None]:
    """``trainer.precision`` -> (parameter dtype, autocast dtype or None), as Lightning runs it."""
    table = {"32": (torch.float32, None), "32-true": (torch.float32, None),
             "bf16-mixed": (torch.float32, torch.bfloat16), "16-mixed": (torch.float32, torch.float16),
             "bf16-true": (torch.bfloat16, None), "16-true": (torch.float16, None)}
    key = str(precision)
    if key not in table:
        raise ValueError(f"trainer.precision: the memory plan knows {sorted(table)}, got {key!r}")
    return table[key]


class StorageLedger(TorchDispatchMode):
    """Live bytes of every tensor storage made under it, by category and by region, with the peaks.

    A storage counts from the operator that returns it until it is freed. Its category is the
    phase it was made in (``activation`` in forward, ``backward``, ``optimizer``) until a
    parameter's ``.grad`` takes it (``gradient``); its region is the innermost region module
    running when it was made (``regions``: module -> name, entered by forward pre-hooks and left
    by forward hooks). Storages made outside (parameters, the batch) are not counted unless
    :meth:`add` registers them.
    """

    def __init__(self, regions: Mapping[nn.Module, str] | None = None) -> None:
        super().__init__()
        self.phase = ACT
        self.live: dict[str, int] = defaultdict(int)          # category -> bytes
        self.live_by_region: dict[str, int] = defaultdict(int)  # region -> activation bytes
        self.total = 0
        self.peak = 0
        self.peak_live: dict[str, int] = {}                   # the categories at the peak
        self._storages: dict[int, list[Any]] = {}             # id(storage) -> [bytes, category, region, weakref]
        self._stack = ["other"]
        self._hooks: list[Any] = []
        for module, name in (regions or {}).items():
            self._hooks.append(module.register_forward_pre_hook(self._enter(name)))
            self._hooks.append(module.register_forward_hook(self._leave(name), always_call=True))

    # ------------------------------------------------------------------ regions
    def _enter(self, name: str):
        def hook(module: nn.Module, args: Any) -> None:
            if self.phase == ACT:
                self._stack.append(name)
        return hook

    def _leave(self, name: str):
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            if self.phase == ACT and self._stack[-1] == name:
                self._stack.pop()
        return hook

    @contextlib.contextmanager
    def region(self, name: str) -> Iterator[None]:
        """Attribute what is made inside to ``name`` (code outside any region module, e.g. the loss)."""
        self._stack.append(name)
        try:
            yield
        finally:
            self._stack.pop()

    def remove_hooks(self) -> None:
        for handle in self._hooks:
            handle.remove()
        self._hooks = []

    # ------------------------------------------------------------------ accounting
    def add(self, tensor: Tensor, category: str, region: str = "other") -> None:
        """Count ``tensor``'s storage (once) under ``category``."""
        storage = tensor.untyped_storage()
        key = id(storage)
        if key in self._storages:
            return
        nbytes = storage.nbytes()
        self._storages[key] = [nbytes, category, region, weakref.ref(storage, lambda _ref, k=key: self._free(k))]
        self.live[category] += nbytes
        if category == ACT:
            self.live_by_region[region] += nbytes
        self.total += nbytes
        if self.total > self.peak:
            self.peak = self.total
            self.peak_live = dict(self.live)

    def _free(self, key: int) -> None:
        nbytes, category, region, _ = self._storages.pop(key)
        self.live[category] -= nbytes
        if category == ACT:
            self.live_by_region[region] -= nbytes
        self.total -= nbytes

    def recategorize(self, tensor: Tensor, category: str) -> None:
        """Move ``tensor``'s counted storage to ``category`` (a gradient landing in ``.grad``)."""
        entry = self._storages.get(id(tensor.untyped_storage()))
        if entry is None or entry[1] == category:
            return
        self.live[entry[1]] -= entry[0]
        if entry[1] == ACT:
            self.live_by_region[entry[2]] -= entry[0]
        entry[1] = category
        self.live[category] += entry[0]

    def reset_peak(self) -> None:
        self.peak = self.total
        self.peak_live = dict(self.live)

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        # What an operator returns on an input's storage (a view, an in-place result) is not new
        # memory, even when the input was made outside the ledger (a parameter, the batch).
        inputs = {id(t.untyped_storage()) for t in tree_leaves((args, kwargs)) if isinstance(t, Tensor)}
        out = func(*args, **kwargs)
        for leaf in tree_leaves(out):
            if isinstance(leaf, Tensor) and id(leaf.untyped_storage()) not in inputs:
                self.add(leaf, self.phase, self._stack[-1] if self.phase == ACT else self.phase)
        return out


@dataclass
class StepPlan:
    """The memory one training step needs on one device (bytes), and what it was planned for."""

    params_bytes: int
    grads_bytes: int
    optimizer_bytes: int
    optimizer_step_bytes: int          # the optimizer step's transient, above its states
    batch_bytes: int
    ddp_bytes: int                     # DDP's gradient buckets (0 on one device without DDP)
    activations_bytes: int             # live when forward (and the loss) ends: what backward needs
    forward_peak_bytes: int            # forward's live peak above its start (activations + transients)
    backward_peak_bytes: int           # backward's live peak above the static part (grads included)
    backward_transient_bytes: int      # backward's peak above the activations it starts with
    backward_peak_parts: dict[str, int]  # at backward's peak: activation (still saved), gradient, backward (its own)
    by_region: dict[str, int]          # activations_bytes by the region that made them
    peak_bytes: int
    peak_phase: str                    # forward | backward | optimizer
    phases: dict[str, int]             # each phase's peak
    params: int                        # parameter count (trainable and frozen)
    trainable_params: int
    optimizer: str
    precision: str
    shape: dict[str, int]              # batch_size, clip_len, crop_size, num_bins
    plan_s: float
    overrides: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _plain(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node


def _runs_ddp(trainer_cfg: Mapping[str, Any]) -> bool:
    """Whether the trainer config runs DDP (buckets hold a copy of the gradients): a ddp strategy,
    or more than one device or node."""
    strategy = str(trainer_cfg.get("strategy", "auto"))
    devices = _plain(trainer_cfg.get("devices", 1))
    many = (isinstance(devices, int) and (devices > 1 or devices == -1)) or (
        isinstance(devices, (list, tuple)) and len(devices) > 1) or int(trainer_cfg.get("num_nodes", 1)) > 1
    return strategy.startswith("ddp") or many


def _plan_optimizer(net: nn.Module, optim_cfg: Mapping[str, Any], fake: FakeTensorMode,
                    foreach: bool) -> tuple[int, int, str]:
    """(state bytes, step transient bytes, what ran): the configured optimizer's first step on the
    fake network's zero gradients, under ``fake``, counted by a ledger."""
    from vrt_spike.lit.optim import build_optimizer

    params = [p for p in net.parameters() if p.requires_grad]
    optimizer = build_optimizer(net, optim_cfg)  # outside the fake mode: bitsandbytes builds its maps from values
    if foreach and isinstance(optimizer, torch.optim.AdamW) and not optimizer.defaults.get("fused"):
        # CUDA's unfused AdamW is the foreach one (temporaries for all tensors at once); a CPU
        # loops over the tensors one by one.
        for group in optimizer.param_groups:
            group["foreach"] = True
    ledger = StorageLedger()
    with fake:
        for p in params:
            p.grad = torch.zeros_like(p)
        ledger.phase = OPTIM
        with ledger:
            optimizer.step()
    state = ledger.live[OPTIM]
    described = type(optimizer).__name__ + (" (fused)" if optimizer.defaults.get("fused") else "")
    for p in params:
        p.grad = None
    return state, ledger.peak - state, described


def _regions(net: nn.Module) -> dict[nn.Module, str]:
    """The timing contract's leaf regions (``vrt.stage3``, ``spike_tsa.scale2``, ...) plus each VRT
    stage's parallel-warping alignment (``vrt.stage3.alignment``) and the parents (``vrt``,
    ``spike_encoder``, ...), whose own operators land on the parent."""
    regions = {r.module: r.suffix for r in find_regions(net) if r.suffix}
    vrt = getattr(net, "vrt", None)
    for i in range(1, 8):
        stage = getattr(vrt, f"stage{i}", None) if vrt is not None else None
        for part in ("pa_deform", "pa_fuse"):
            module = getattr(stage, part, None) if stage is not None else None
            if module is not None:
                regions[module] = f"vrt.stage{i}.alignment"
    return regions


def plan_training_step(cfg: DictConfig, *, target: str = "cuda", overrides: list[str] | None = None) -> StepPlan:
    """Plan one training step of the composed ``conf/train.yaml`` ``cfg`` on one device.

    ``target``: the device the plan is for, ``cuda`` (where an unfused AdamW is torch's foreach
    one) or ``cpu`` (a check against a CPU step). Nothing runs on a GPU.
    """
    from vrt_spike.lit.module import DeblurModule

    t0 = now_s()
    if target not in ("cuda", "cpu"):
        raise ValueError(f"plan target: expected cuda or cpu, got {target!r}")
    data = cfg.data
    shape = {k: int(data[k]) for k in ("batch_size", "clip_len", "crop_size", "num_bins")}
    param_dtype, autocast_dtype = precision_dtypes(cfg.trainer.precision)
    # Planned eager (see the module doc), and with fresh weights: what they hold does not change the memory.
    model_cfg = {**_plain(cfg.model), "compile": False, "pretrained": None}
    module = DeblurModule(model=model_cfg, optim=cfg.optim, scheduler=cfg.get("scheduler"), loss=cfg.get("loss"),
                          **_plain(cfg.get("module") or {}))
    module.freeze_for_fit(int(cfg.trainer.max_steps))
    module = module.to(param_dtype)
    net = module.net
    params = list(module.parameters())
    trainable = [p for p in params if p.requires_grad]
    params_bytes = sum(p.numel() * p.element_size() for p in params)
    # Real tensors may meet the fake ones only where bitsandbytes keeps its quantisation maps.
    fake = FakeTensorMode(allow_non_fake_inputs=True)
    module._apply(fake.from_tensor)  # parameters and buffers become fake; the real ones are gone
    optimizer_bytes, optimizer_step_bytes, optimizer_name = _plan_optimizer(net, _plain(cfg.optim), fake,
                                                                            foreach=target == "cuda")
    ledger = StorageLedger(_regions(net))
    grad_hooks = [p.register_post_accumulate_grad_hook(lambda p: ledger.recategorize(p.grad, GRAD))
                  for p in module.parameters() if p.requires_grad]
    b, t, s, k = shape["batch_size"], shape["clip_len"], shape["crop_size"], shape["num_bins"]
    clear_shape_caches()
    try:
        with fake, ledger:
            ledger.phase = STATIC
            batch = {"blur": torch.rand(b, t, 3, s, s), "sharp": torch.rand(b, t, 3, s, s),
                     "spike": torch.rand(b, t, k, s, s)}
            if autocast_dtype is None and param_dtype != torch.float32:  # Lightning's *-true input conversion
                batch = {key: v.to(param_dtype) for key, v in batch.items()}
            batch_bytes = ledger.live[STATIC]
            ledger.phase = ACT
            ledger.reset_peak()
            start = ledger.total
            autocast = (torch.autocast("cpu", dtype=autocast_dtype) if autocast_dtype is not None
                        else contextlib.nullcontext())
            with autocast:
                pred = module(batch["blur"], batch["spike"])
                with ledger.region("loss"):
                    loss = module.loss_fn(pred, batch["sharp"])
            del pred
            forward_peak = ledger.peak - start
            activations = ledger.live[ACT]
            by_region = {r: v for r, v in sorted(ledger.live_by_region.items()) if v > 0}
            ledger.phase = BACKWARD
            ledger.reset_peak()
            loss.backward()
            del loss
            backward_peak = ledger.peak - start
            parts = {k: ledger.peak_live.get(k, 0) for k in (ACT, GRAD, BACKWARD)}
            grads_bytes = ledger.live[GRAD]
    finally:
        clear_shape_caches()
        ledger.remove_hooks()
        for hook in grad_hooks:
            hook.remove()
    expected_grads = sum(p.numel() * p.element_size() for p in trainable)
    if grads_bytes != expected_grads:
        raise RuntimeError(f"memory plan: the traced backward left {grads_bytes} bytes of parameter gradients, "
                           f"the trainable parameters need {expected_grads}")
    ddp_bytes = grads_bytes if _runs_ddp(cfg.trainer) else 0
    static = params_bytes + optimizer_bytes + batch_bytes + ddp_bytes
    phases = {"forward": static + grads_bytes + forward_peak,
              "backward": static + backward_peak,
              "optimizer": static + grads_bytes + optimizer_step_bytes}
    peak_phase = max(phases, key=phases.get)
    return StepPlan(
        params_bytes=params_bytes, grads_bytes=grads_bytes, optimizer_bytes=optimizer_bytes,
        optimizer_step_bytes=optimizer_step_bytes, batch_bytes=batch_bytes, ddp_bytes=ddp_bytes,
        activations_bytes=activations, forward_peak_bytes=forward_peak, backward_peak_bytes=backward_peak,
        backward_transient_bytes=backward_peak - activations, backward_peak_parts=parts, by_region=by_region,
        peak_bytes=phases[peak_phase], peak_phase=peak_phase, phases=phases,
        params=sum(p.numel() for p in params), trainable_params=sum(p.numel() for p in trainable),
        optimizer=optimizer_name, precision=str(cfg.trainer.precision), shape=shape,
        plan_s=now_s() - t0, overrides=list(overrides or []))


def _gib(nbytes: float) -> str:
    """GiB from 1 GiB up, MiB below (a tiny config's figures would all read 0.00 GiB)."""
    return f"{nbytes / GIB:7.2f} GiB" if abs(nbytes) >= GIB else f"{nbytes / 2**20:7.1f} MiB"


def plan_table(plan: StepPlan, top_regions: int = 12) -> str:
    """The plan as text: the static parts, activations by region, backward, the peak and its phase."""
    s = plan.shape
    lines = [f"Memory plan of one training step on one device: batch {s['batch_size']} x {s['clip_len']} frames x "
             f"{s['crop_size']}^2, {s['num_bins']} spike bins, precision {plan.precision}, {plan.optimizer}; "
             f"{plan.params / 1e6:.2f} M parameters ({plan.trainable_params / 1e6:.2f} M trainable); planned in "
             f"{plan.plan_s:.0f} s",
             f"  parameters          {_gib(plan.params_bytes)}",
             f"  gradients           {_gib(plan.grads_bytes)}",
             f"  optimizer states    {_gib(plan.optimizer_bytes)}   (its step adds {_gib(plan.optimizer_step_bytes).strip()})",
             f"  batch               {_gib(plan.batch_bytes)}"]
    if plan.ddp_bytes:
        lines.append(f"  DDP grad buckets    {_gib(plan.ddp_bytes)}")
    lines.append(f"  activations         {_gib(plan.activations_bytes)}   (live when the loss is computed: what "
                 "backward needs), by region:")
    ranked = sorted(plan.by_region.items(), key=lambda kv: -kv[1])
    for region, nbytes in ranked[:top_regions]:
        share = nbytes / plan.activations_bytes if plan.activations_bytes else 0.0
        lines.append(f"    {region:<24}{_gib(nbytes)}  {share:5.1%}")
    if len(ranked) > top_regions:
        rest = sum(v for _, v in ranked[top_regions:])
        lines.append(f"    {f'{len(ranked) - top_regions} more regions':<24}{_gib(rest)}")
    lines += [f"  forward peak        {_gib(plan.forward_peak_bytes)}   (activations and forward's transients)",
              f"  backward peak       {_gib(plan.backward_peak_bytes)}   ({_gib(plan.backward_transient_bytes).strip()} "
              "above the activations; at that moment: "
              + ", ".join(f"{k} {_gib(v).strip()}" for k, v in plan.backward_peak_parts.items()) + ")",
              "  step peak by phase: " + ", ".join(f"{k} {_gib(v).strip()}" for k, v in plan.phases.items()),
              f"  PEAK                {_gib(plan.peak_bytes)}   (in {plan.peak_phase})"]
    return "\n".join(lines)
