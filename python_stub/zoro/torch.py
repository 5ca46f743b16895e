"""zoro.torch: torch.optim optimizers whose state lives in zoro's pinned host memory.

``Adam`` and ``AdamW`` have the interface of ``torch.optim.Adam`` / ``torch.optim.AdamW``
(torch 1.13): parameter groups with their own lr, betas, eps and weight_decay; changes to a
group's hyper-parameters take effect at the next ``step()``; ``state_dict()`` has the layout
of ``torch.optim.AdamW`` (per parameter ``step``, ``exp_avg``, ``exp_avg_sq``), and
``load_state_dict()`` accepts a state dict saved by ``torch.optim.AdamW`` or ``Adam``, step
counts included. The update is zoro's fused CPU optimizer (``zoro.adam_step``), run on a
pinned oneTBB team; the state (fp32 master weights, exp_avg, exp_avg_sq) is allocated from a
``zoro.PinnedPool`` on zoro's device layer: page-locked memory bound to the GPU's NUMA node
when zoro was built with CUDA and a GPU is usable, ordinary host memory otherwise.

How each parameter is updated (Note [Parameter modes]):

* CPU parameter, contiguous, fp32 (``cpu_in_place=True``, the default): the parameter itself
  is the master; zoro updates it in place from its fp32 gradient. exp_avg / exp_avg_sq are
  pinned.
* CPU parameter, contiguous, bf16 or fp16 (``cpu_in_place=True``): an fp32 master in pinned
  memory; zoro writes the rounded new weight straight into the parameter (round to nearest
  even) in the same pass.
* Anything else, CUDA parameters in particular ("staged"): an fp32 master in pinned memory.
  The gradient is converted to ``grad_dtype`` (bf16 by default) on the GPU and copied down
  into a pinned landing buffer on a side stream; the update of a parameter starts as soon as
  its own gradient has arrived, while later ones are still copying; each chunk of
  ``chunk_elems`` new weights (rounded to the parameter's dtype in a pinned staging buffer,
  or the fp32 master itself for fp32 parameters) is copied back with ``non_blocking=True`` on
  a second side stream while the next chunk is computed. The upload stream first waits for
  the work already queued on the current stream (backward still reads the old weights), and
  the current stream waits for the uploads before ``step()`` returns, so the next forward
  sees the new weights without the host blocking on them. The pinned buffers are reused
  only after the previous step's uploads have completed.

Semantics follow torch: Adam adds ``weight_decay * param`` to the gradient (L2), AdamW
decays the weights (decoupled). Not supported (ValueError): amsgrad, maximize, sparse
gradients. With fp32 CPU parameters the results equal torch's to within fp32 rounding (zoro
uses an FMA where torch rounds twice); staged parameters additionally see the gradient
rounded to ``grad_dtype``.
"""

from __future__ import annotations

import copy
import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from itertools import chain
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

import torch

from . import _zoro

__all__ = ["Adam", "AdamW"]

_ALIGN_BYTES = 64  # alignment of each array inside a parameter's pinned block (a cache line)
_UNSUPPORTED_FLAGS = ("amsgrad", "maximize")


def _round_up(n: int, a: int) -> int:
    return (n + a - 1) // a * a


@dataclass
class _Slot:
    """The zoro-side arrays of one parameter (flat views; not part of the state dict)."""

    mode: str  # "in_place" | "in_place_half" | "staged"
    block: Any  # the zoro.PinnedBlock that every pinned view below shares
    master: torch.Tensor  # fp32, flat: the parameter itself in mode "in_place"
    exp_avg: torch.Tensor
    exp_avg_sq: torch.Tensor
    grad: Optional[torch.Tensor] = None  # staged: pinned landing buffer (grad_dtype)
    staging: Optional[torch.Tensor] = None  # staged 16-bit parameter: pinned half copy
    events: List[Any] = field(default_factory=list)


class Adam(torch.optim.Optimizer):
    """torch.optim.Adam with its state in zoro's pinned memory and zoro's CPU update.

    Args (as torch.optim.Adam): params, lr, betas, eps, weight_decay (L2), amsgrad (must be
    False). Keyword-only, zoro's own:
        grad_dtype: what staged gradients cross the link as (torch.bfloat16, torch.float16 or
            torch.float32; default bfloat16).
        chunk_elems: elements per update chunk, i.e. per weight copy back (staged parameters).
        cpu_in_place: update contiguous CPU parameters in place (default True); False stages
            them like CUDA parameters.
        threads: CPU optimizer threads (0: every core of the NUMA node).
        pinned_budget_bytes: the most pinned memory the optimizer may hold (default: 80% of
            physical memory); zoro.OutOfMemory names the numbers when exceeded.
        device: zoro device spec for the memory ("auto": the GPU of the first CUDA parameter
            when zoro has CUDA, else "host").
    """

    _decoupled = False

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        betas: Tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        amsgrad: bool = False,
        *,
        maximize: bool = False,
        foreach: Optional[bool] = None,
        capturable: bool = False,
        grad_dtype: torch.dtype = torch.bfloat16,
        chunk_elems: int = 1 << 20,
        cpu_in_place: bool = True,
        threads: int = 0,
        pinned_budget_bytes: Optional[int] = None,
        device: str = "auto",
    ) -> None:
        if not 0.0 <= lr:
            raise ValueError("Invalid learning rate: {}".format(lr))
        if not 0.0 <= eps:
            raise ValueError("Invalid epsilon value: {}".format(eps))
        if not 0.0 <= betas[0] < 1.0:
            raise ValueError("Invalid beta parameter at index 0: {}".format(betas[0]))
        if not 0.0 <= betas[1] < 1.0:
            raise ValueError("Invalid beta parameter at index 1: {}".format(betas[1]))
        if not 0.0 <= weight_decay:
            raise ValueError("Invalid weight_decay value: {}".format(weight_decay))
        if grad_dtype not in (torch.bfloat16, torch.float16, torch.float32):
            raise ValueError(f"grad_dtype={grad_dtype} is not torch.bfloat16, float16 or float32")
        if chunk_elems < 1:
            raise ValueError(f"chunk_elems={chunk_elems} must be >= 1")
        defaults = dict(
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            amsgrad=amsgrad,
            foreach=foreach,
            maximize=maximize,
            capturable=capturable,
        )
        super().__init__(params, defaults)
        for group in self.param_groups:
            self._check_group(group)
        self._grad_dtype = grad_dtype
        self._chunk_elems = int(chunk_elems)
        self._cpu_in_place = bool(cpu_in_place)
        self._slots: Dict[torch.Tensor, _Slot] = {}
        self._executor = _zoro.CpuExecutor(threads=threads)
        self._zoro_device = _zoro.open_device(self._device_spec(device))
        if pinned_budget_bytes is None:
            pinned_budget_bytes = _zoro.physical_memory_bytes() * 8 // 10
        self._pool = _zoro.PinnedPool(
            self._zoro_device, budget_bytes=int(pinned_budget_bytes), chunk_bytes=64 << 20
        )
        self._streams: Dict[torch.device, Tuple[Any, Any]] = {}
        self._uploads_done: Dict[torch.device, Any] = {}

    # ---- torch.optim interface ----------------------------------------------------------

    def __setstate__(self, state: Dict[str, Any]) -> None:
        super().__setstate__(state)
        for group in self.param_groups:
            group.setdefault("amsgrad", False)
            group.setdefault("maximize", False)
            group.setdefault("foreach", None)
            group.setdefault("capturable", False)

    @torch.no_grad()
    def step(self, closure: Optional[Callable[[], Any]] = None) -> Any:
        """One update of every parameter that has a gradient; returns closure()'s loss."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        work: List[Tuple[torch.Tensor, Dict[str, Any]]] = []
        for group in self.param_groups:
            self._check_group(group)
            for p in group["params"]:
                if p.grad is None or p.numel() == 0:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("zoro.torch optimizers do not support sparse gradients")
                work.append((p, group))
        if not work:
            return loss
        slots = [self._slot(p) for p, _ in work]
        staged_devices = {p.device for (p, _), s in zip(work, slots) if s.mode == "staged"}
        # The pinned buffers are rewritten below: the previous step's uploads must be done.
        self._wait_uploads()
        # Every staged gradient starts down before the first update, so that the copies of
        # later parameters overlap the updates of earlier ones.
        for (p, _), slot in zip(work, slots):
            if slot.mode == "staged":
                self._start_grad_copy(p, slot)
        for dev in staged_devices:
            if dev.type == "cuda":
                # Uploads overwrite the weights: after the work queued so far (backward).
                self._cuda_streams(dev)[1].wait_stream(torch.cuda.current_stream(dev))
        for (p, group), slot in zip(work, slots):
            self._update(p, group, slot)
        for dev in staged_devices:
            if dev.type == "cuda":
                h2d = self._cuda_streams(dev)[1]
                done = torch.cuda.Event()
                done.record(h2d)
                self._uploads_done[dev] = done
                torch.cuda.current_stream(dev).wait_stream(h2d)
        return loss

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        """Loads a state dict of this class, of torch.optim.AdamW or of torch.optim.Adam.

        The values are copied into this optimizer's pinned buffers (the saved tensors may be on
        any device, of any float dtype); hyper-parameters come from the saved groups. A saved
        'master_weight' (written by zoro for staged parameters) restores the fp32 master;
        without one the master starts from the parameter's current value.
        """
        self._wait_uploads()  # the buffers below may still be the source of copies
        groups = self.param_groups
        saved_groups = copy.deepcopy(state_dict["param_groups"])
        if len(groups) != len(saved_groups):
            raise ValueError("loaded state dict has a different number of parameter groups")
        for i, (g, s) in enumerate(zip(groups, saved_groups)):
            if len(g["params"]) != len(s["params"]):
                raise ValueError(
                    "loaded state dict contains a parameter group that doesn't match the size "
                    f"of optimizer's group (group {i}: {len(s['params'])} saved, "
                    f"{len(g['params'])} here)"
                )
        id_map = {
            old: p
            for old, p in zip(
                chain.from_iterable(s["params"] for s in saved_groups),
                chain.from_iterable(g["params"] for g in groups),
            )
        }
        for key, saved in state_dict["state"].items():  # all checks before any change
            if key not in id_map:
                continue
            p = id_map[key]
            for name in ("step", "exp_avg", "exp_avg_sq"):
                if name not in saved:
                    raise ValueError(
                        f"loaded state of parameter {key} has no '{name}' "
                        f"(keys: {sorted(saved)}): not an Adam/AdamW state dict"
                    )
            for name in ("exp_avg", "exp_avg_sq"):
                if saved[name].numel() != p.numel():
                    raise ValueError(
                        f"loaded state of parameter {key} has {saved[name].numel()} elements in "
                        f"'{name}'; the parameter has {p.numel()}"
                    )
        for g, s in zip(groups, saved_groups):
            s["params"] = g["params"]
            self._check_group(s)
        self.__setstate__({"state": defaultdict(dict), "param_groups": saved_groups})
        for key, saved in state_dict["state"].items():
            if key not in id_map:
                self.state[key] = copy.deepcopy(saved)  # as torch keeps foreign state
                continue
            p = id_map[key]
            slot = self._slot(p)
            step = saved["step"]
            self.state[p]["step"].fill_(float(step.item() if torch.is_tensor(step) else step))
            slot.exp_avg.copy_(saved["exp_avg"].detach().reshape(-1))
            slot.exp_avg_sq.copy_(saved["exp_avg_sq"].detach().reshape(-1))
            if slot.mode != "in_place" and "master_weight" in saved:
                slot.master.copy_(saved["master_weight"].detach().reshape(-1))

    # ---- zoro's own ---------------------------------------------------------------------

    def pinned_stats(self) -> Any:
        """The pinned pool's figures (zoro.PinnedPoolStats): budget, reserved, in use, peak."""
        return self._pool.stats()

    def slot_mode(self, p: torch.Tensor) -> Optional[str]:
        """How p is updated ("in_place", "in_place_half", "staged"), or None before its state
        exists (Note [Parameter modes] in the module's docstring)."""
        slot = self._slots.get(p)
        return slot.mode if slot is not None else None

    # ---- internals ----------------------------------------------------------------------

    def _device_spec(self, spec: str) -> str:
        if spec != "auto":
            return spec
        for group in self.param_groups:
            for p in group["params"]:
                if p.device.type == "cuda":
                    if _zoro.cuda_device_count() > 0:
                        return f"cuda:{p.device.index or 0}"
                    warnings.warn(
                        "zoro.torch: zoro has no usable CUDA ("
                        + _zoro.cuda_unavailable_reason()
                        + "); the optimizer's host memory is not pinned, so the copies of "
                        "CUDA parameters will not overlap compute"
                    )
                    return "host"
        return "host"

    @staticmethod
    def _check_group(group: Dict[str, Any]) -> None:
        for flag in _UNSUPPORTED_FLAGS:
            if group.get(flag, False):
                raise ValueError(f"zoro.torch optimizers do not support {flag}=True")

    def _mode(self, p: torch.Tensor) -> str:
        if p.dtype not in (torch.float32, torch.bfloat16, torch.float16):
            raise TypeError(
                f"parameter of dtype {p.dtype}: zoro.torch optimizes float32, bfloat16 and "
                "float16 parameters"
            )
        if self._cpu_in_place and p.device.type == "cpu" and p.is_contiguous():
            return "in_place" if p.dtype == torch.float32 else "in_place_half"
        return "staged"

    def _slot(self, p: torch.Tensor) -> _Slot:
        """p's arrays, allocated on first use; also creates p's state as torch does."""
        slot = self._slots.get(p)
        if slot is None:
            slot = self._allocate(p)
            self._slots[p] = slot
        state = self.state[p]
        if "step" not in state:
            state["step"] = torch.tensor(0.0)
            slot.exp_avg.zero_()
            slot.exp_avg_sq.zero_()
            if slot.mode != "in_place":
                slot.master.copy_(p.detach().reshape(-1))
            state["exp_avg"] = slot.exp_avg.view(p.shape)
            state["exp_avg_sq"] = slot.exp_avg_sq.view(p.shape)
            if slot.mode == "staged":
                state["master_weight"] = slot.master.view(p.shape)
        return slot

    def _allocate(self, p: torch.Tensor) -> _Slot:
        mode = self._mode(p)
        n = p.numel()
        layout: List[Tuple[str, torch.dtype]] = [("exp_avg", torch.float32), ("exp_avg_sq", torch.float32)]
        if mode != "in_place":
            layout.append(("master", torch.float32))
        if mode == "staged":
            layout.append(("grad", self._grad_dtype))
            if p.dtype != torch.float32:
                layout.append(("staging", p.dtype))
        offsets = {}
        total = 0
        for name, dtype in layout:
            offsets[name] = total
            total = _round_up(total + n * _element_size(dtype), _ALIGN_BYTES)
        block = self._pool.allocate(total)
        views = {
            name: torch.frombuffer(block, dtype=dtype, count=n, offset=offsets[name])
            for name, dtype in layout
        }
        master = views.get("master")
        if master is None:
            master = p.detach().view(-1)  # in place: the parameter is the master
        return _Slot(
            mode=mode,
            block=block,
            master=master,
            exp_avg=views["exp_avg"],
            exp_avg_sq=views["exp_avg_sq"],
            grad=views.get("grad"),
            staging=views.get("staging"),
        )

    def _wait_uploads(self) -> None:
        """Blocks until the weight copies of the previous step() have completed."""
        for done in self._uploads_done.values():
            done.synchronize()
        self._uploads_done.clear()

    def _cuda_streams(self, dev: torch.device) -> Tuple[Any, Any]:
        streams = self._streams.get(dev)
        if streams is None:
            streams = (torch.cuda.Stream(device=dev), torch.cuda.Stream(device=dev))
            self._streams[dev] = streams
        return streams

    def _start_grad_copy(self, p: torch.Tensor, slot: _Slot) -> None:
        assert slot.grad is not None
        landing = slot.grad.view(p.shape)
        if p.device.type != "cuda":
            landing.copy_(p.grad)  # rounds to grad_dtype (nearest even) on the way
            slot.events = []
            return
        d2h = self._cuda_streams(p.device)[0]
        d2h.wait_stream(torch.cuda.current_stream(p.device))  # the gradient is complete
        with torch.cuda.stream(d2h):
            g = p.grad if p.grad.dtype == self._grad_dtype else p.grad.to(self._grad_dtype)
            landing.copy_(g, non_blocking=True)
            arrived = torch.cuda.Event()
            arrived.record(d2h)
        slot.events = [arrived]

    def _update(self, p: torch.Tensor, group: Dict[str, Any], slot: _Slot) -> None:
        state = self.state[p]
        state["step"] += 1
        beta1, beta2 = group["betas"]
        config = _zoro.AdamConfig(
            lr=float(group["lr"]),
            beta1=float(beta1),
            beta2=float(beta2),
            eps=float(group["eps"]),
            weight_decay=float(group["weight_decay"]),
            decoupled_weight_decay=self._decoupled,
        )
        step = int(state["step"].item())
        if slot.mode == "in_place":
            slot.master = p.detach().view(-1)  # the parameter, even if p.data was replaced
            _zoro.adam_step(config, slot.master, slot.exp_avg, slot.exp_avg_sq, _flat_grad(p),
                            step=step, executor=self._executor)
            return
        if slot.mode == "in_place_half":
            _zoro.adam_step(config, slot.master, slot.exp_avg, slot.exp_avg_sq, _flat_grad(p),
                            step=step, half_out=p.detach().view(-1), executor=self._executor)
            return
        for event in slot.events:
            event.synchronize()  # this parameter's gradient has landed
        slot.events = []
        source = slot.staging if slot.staging is not None else slot.master
        upload = self._uploader(p, source)
        _zoro.adam_step(config, slot.master, slot.exp_avg, slot.exp_avg_sq, slot.grad,
                        step=step, half_out=slot.staging, chunk_elems=self._chunk_elems,
                        on_chunk_done=upload, executor=self._executor)

    def _uploader(self, p: torch.Tensor, source: torch.Tensor) -> Callable[[int, int], None]:
        """Copies chunk [begin, end) of the new weights into p (asynchronously on CUDA)."""
        if p.is_contiguous():
            target = p.detach().view(-1)
        else:  # no flat view: the whole parameter once the last chunk is done
            n = p.numel()

            def whole(begin: int, end: int) -> None:
                if end == n:
                    p.detach().copy_(source.view(p.shape), non_blocking=True)

            return _on_stream(p, whole, self)
        return _on_stream(
            p, lambda b, e: target[b:e].copy_(source[b:e], non_blocking=True), self
        )


class AdamW(Adam):
    """torch.optim.AdamW (decoupled weight decay, default 1e-2) on zoro; see Adam."""

    _decoupled = True

    def __init__(self, params: Iterable[Any], lr: float = 1e-3,
                 betas: Tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2, amsgrad: bool = False, **kwargs: Any) -> None:
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, **kwargs)


def _element_size(dtype: torch.dtype) -> int:
    return torch.tensor([], dtype=dtype).element_size()


def _flat_grad(p: torch.Tensor) -> torch.Tensor:
    g = p.grad
    if g.dtype != p.dtype:
        raise TypeError(f"gradient of dtype {g.dtype} for a parameter of dtype {p.dtype}")
    return g.reshape(-1) if g.is_contiguous() else g.contiguous().view(-1)


def _on_stream(p: torch.Tensor, fn: Callable[[int, int], None], opt: Adam) -> Callable[[int, int], None]:
    if p.device.type != "cuda":
        return fn
    h2d = opt._cuda_streams(p.device)[1]

    def on_h2d(begin: int, end: int) -> None:
        with torch.cuda.stream(h2d):
            fn(begin, end)

    return on_h2d
