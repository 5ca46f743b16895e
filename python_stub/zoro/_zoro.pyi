"""Typed interface of zoro._zoro, the C++ extension behind the zoro package.

Kept equal to the module by tests/test_stubs.py: every public name (and every public member
of every class) here exists in the module and vice versa.

Host arrays ("Array" below) are NumPy arrays (or any buffer-protocol object) or CPU
torch.Tensors, used in place without copies. Element types: float32 -> fp32, float16 -> fp16,
uint16 -> bf16 bit patterns (NumPy has no bfloat16; ml_dtypes is not needed), and torch's
float32 / float16 / bfloat16. Every array argument raises:
  TypeError        when it is not an array/tensor, or its dtype is not one the argument takes;
  InvalidArgument  (a ValueError) when it is not C-contiguous, read-only but written, a
                   tensor not on the CPU, of a length other than master's, or misaligned
                   (fp32 at an address not a multiple of 4, 16-bit not a multiple of 2).
"""

import enum
from typing import Any, Callable, List, Optional, Sequence, Union

import numpy

Array = Any  # numpy.ndarray, a buffer-protocol object, or a CPU torch.Tensor
ParamLike = Union["ParamId", int]

# ---- errors -----------------------------------------------------------------------------

class Error(RuntimeError):
    """Base class of every error zoro raises; str() is the C++ what() (file:line, detail)."""

class InvalidArgument(Error, ValueError):
    """Bad input: a value, a config key, an array, a file's contents."""

class OutOfMemory(Error, MemoryError):
    """A capacity or budget would be exceeded; the message names requested and free bytes."""

class IoError(Error, OSError):
    """A file could not be read or written, or is not what it claims to be."""

class BackendError(Error):
    """A call into CUDA, cuBLAS, NCCL, MPI or hwloc failed."""

    library: str
    code: int

class Unsupported(Error, NotImplementedError):
    """Not supported by this backend or build (e.g. CUDA asked of a CPU-only build)."""

def _raise_for_test(kind: str, message: str) -> None:
    """Throws the C++ exception named `kind` with `message` (tests of the mapping)."""

# ---- device layer -----------------------------------------------------------------------

class BackendKind(enum.Enum):
    HOST = ...
    CUDA = ...

class MemoryKind(enum.Enum):
    DEVICE = ...
    PINNED_HOST = ...
    PAGEABLE_HOST = ...

class DeviceInfo:
    backend: BackendKind
    name: str
    spec: str
    ordinal: int
    pci_bus_id: str
    numa_node: int
    memory_capacity_bytes: int

class MemoryStats:
    used_bytes: int
    peak_bytes: int
    capacity_bytes: int
    allocations: int

class HostBuffer:
    """Host memory from Device.allocate; exports the buffer protocol (1-D bytes):
    numpy.frombuffer(buf, numpy.float32) / torch.frombuffer(buf, dtype=...) view it, and a
    view keeps it (and its device) alive."""

    data_ptr: int
    bytes: int
    kind: MemoryKind

class DeviceBuffer:
    """Device memory from Device.allocate: an address and a size (not host-readable)."""

    data_ptr: int
    bytes: int
    kind: MemoryKind

class Device:
    info: DeviceInfo
    backend: BackendKind
    def memory_stats(self, kind: MemoryKind) -> MemoryStats: ...
    def reset_peak(self, kind: MemoryKind) -> None: ...
    def allocate(self, kind: MemoryKind, bytes: int) -> Union[HostBuffer, DeviceBuffer]:
        """bytes > 0, aligned to 256 B. Raises OutOfMemory past the device's capacity."""
    def synchronize(self) -> None:
        """Waits for every stream; raises the first error stored by stream work."""

def open_device(spec: str = "auto") -> Device:
    """'auto', 'host[:mem=SIZE][:trace]' or 'cuda[:N][:mem=SIZE]'. Raises InvalidArgument for
    a malformed spec, Unsupported for CUDA without a usable GPU or in a CPU-only build."""

def cuda_device_count() -> int: ...
def cuda_unavailable_reason() -> str: ...
def parse_bytes(text: str) -> int:
    """'256MiB' -> 268435456. Raises InvalidArgument naming the text."""

def format_bytes(bytes: int) -> str: ...
def physical_memory_bytes() -> int: ...

class PinnedPoolStats:
    budget_bytes: int
    reserved_bytes: int
    in_use_bytes: int
    peak_in_use_bytes: int
    chunks: int
    dedicated: int
    blocks: int

class PinnedBlock:
    """A block of a PinnedPool; buffer protocol as HostBuffer; keeps its pool alive."""

    data_ptr: int
    bytes: int
    dedicated: bool

class PinnedPool:
    """Pinned host memory under a budget, carved from chunks (offload/pinned_pool.h)."""

    numa_node: int
    budget_bytes: int
    chunk_bytes: int
    def __init__(self, device: Device, *, budget_bytes: int, chunk_bytes: int = ...) -> None:
        """Raises InvalidArgument for a zero budget or one above physical memory."""
    def allocate(self, bytes: int, alignment: int = 64) -> PinnedBlock:
        """Raises OutOfMemory (naming requested, in-use, reserved and budget bytes)."""
    def trim(self) -> int: ...
    def stats(self) -> PinnedPoolStats: ...
    def reset_peak(self) -> None: ...

# ---- CPU optimizers ---------------------------------------------------------------------

def cpu_isa() -> str:
    """'scalar', 'avx2', 'avx512' or 'avx512bf16': the path in force."""

def supported_cpu_isas() -> List[str]: ...
def set_cpu_isa(name: Optional[str]) -> None:
    """Forces a path (results are bit-identical on every path); None restores the default.
    Raises InvalidArgument for an unknown name or one this CPU cannot run."""

class CpuExecutor:
    """The pinned oneTBB team the optimizers run on (threads=0: every PU of the node)."""

    threads: int
    cpus: List[int]
    numa_node: int
    def __init__(self, *, threads: int = 0, numa_node: int = -1, pin_threads: bool = True) -> None: ...

class AdamConfig:
    lr: float
    beta1: float
    beta2: float
    eps: float
    weight_decay: float
    decoupled_weight_decay: bool
    def __init__(
        self,
        *,
        lr: float = 1e-3,
        beta1: float = 0.9,
        beta2: float = 0.999,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        decoupled_weight_decay: bool = False,
    ) -> None: ...

class AdagradConfig:
    lr: float
    eps: float
    weight_decay: float
    def __init__(self, *, lr: float = 1e-2, eps: float = 1e-10, weight_decay: float = 0.0) -> None: ...

class LionConfig:
    lr: float
    beta1: float
    beta2: float
    weight_decay: float
    def __init__(
        self, *, lr: float = 1e-4, beta1: float = 0.9, beta2: float = 0.99, weight_decay: float = 0.0
    ) -> None: ...

def adam_step(
    config: AdamConfig,
    master: Array,
    exp_avg: Array,
    exp_avg_sq: Array,
    grad: Array,
    *,
    step: int,
    grad_scale: float = 1.0,
    half_out: Optional[Array] = None,
    begin: int = 0,
    end: Optional[int] = None,
    chunk_elems: int = 0,
    on_chunk_done: Optional[Callable[[int, int], None]] = None,
    executor: Optional[CpuExecutor] = None,
) -> None:
    """One fused Adam/AdamW update of master[begin:end], in place (offload/optim/
    cpu_optimizer.h gives the formula; PyTorch's Adam/AdamW evaluated in fp32).

    master: float32. exp_avg, exp_avg_sq: float32, or bf16 (uint16), the same for both.
    grad: float32, float16 or bf16 (uint16); multiplied by grad_scale first. half_out:
    bf16 (uint16) or float16, receives the new weight rounded to nearest even. All of
    master's length. on_chunk_done(begin, end) is called after each chunk of chunk_elems
    (0: one chunk), on the calling thread, in order. The GIL is released during the update.

    Raises TypeError for a wrong dtype or a non-array; InvalidArgument (ValueError) for a
    non-contiguous, read-only (when written), misaligned or wrong-length array, step < 1,
    grad_scale not finite and > 0, hyper-parameters out of range, a range outside [0, n);
    nothing is written then.
    """

def adagrad_step(
    config: AdagradConfig,
    master: Array,
    state_sum: Array,
    grad: Array,
    *,
    step: int,
    grad_scale: float = 1.0,
    half_out: Optional[Array] = None,
    begin: int = 0,
    end: Optional[int] = None,
    chunk_elems: int = 0,
    on_chunk_done: Optional[Callable[[int, int], None]] = None,
    executor: Optional[CpuExecutor] = None,
) -> None:
    """torch.optim.Adagrad (lr_decay 0) in place; arguments and errors as adam_step."""

def lion_step(
    config: LionConfig,
    master: Array,
    exp_avg: Array,
    grad: Array,
    *,
    step: int,
    grad_scale: float = 1.0,
    half_out: Optional[Array] = None,
    begin: int = 0,
    end: Optional[int] = None,
    chunk_elems: int = 0,
    on_chunk_done: Optional[Callable[[int, int], None]] = None,
    executor: Optional[CpuExecutor] = None,
) -> None:
    """Lion (lion-pytorch, sign(0) = 0) in place; arguments and errors as adam_step."""

# ---- configuration ----------------------------------------------------------------------

class LossScaleConfig:
    init: float
    growth_interval: int
    growth_factor: float
    backoff_factor: float
    min: float
    def __init__(self, **fields: Any) -> None:
        """Fields by name; an unknown one raises InvalidArgument."""

class Config:
    """runtime/config.h: what the engine is told. Dtypes and the optimizer are their TOML
    spellings ('bf16', 'fp16', 'fp32'; 'adam', 'adamw', 'adagrad', 'lion'); setting an unknown
    one raises InvalidArgument naming the key."""

    device: str
    dtype: str
    grad_dtype: str
    moments: str
    optimizer: str
    lr: float
    beta1: float
    beta2: float
    eps: float
    weight_decay: float
    clip_norm: float
    loss_scale: LossScaleConfig
    bucket_bytes: int
    bucket_count: int
    grad_accum_steps: int
    dpu: bool
    dpu_warmup_steps: int
    host_budget_bytes: int
    cpu_threads: int
    chunk_elems: int
    trace: bool
    def __init__(self, **fields: Any) -> None:
        """Defaults, then fields by name; an unknown one raises InvalidArgument."""
    @staticmethod
    def from_toml(text: str, origin: str = "<string>") -> Config:
        """Parses and validates; InvalidArgument names the key (an unknown one too)."""
    @staticmethod
    def from_file(path: str) -> Config:
        """As from_toml; IoError when the file cannot be read."""
    def validate(self) -> None:
        """Raises InvalidArgument naming the first bad key and its value."""
    def uses_loss_scaling(self) -> bool: ...
    def effective_host_budget(self) -> int: ...
    def to_toml(self) -> str:
        """The config as TOML; Config.from_toml(c.to_toml()) == c."""
    def fingerprint(self) -> int: ...
    def __eq__(self, other: object) -> bool: ...

# ---- memory plan ------------------------------------------------------------------------

class Place(enum.Enum):
    DEVICE = ...
    PINNED_HOST = ...

class PlanOptions:
    total_elems: int
    working: str
    grad_wire: str
    moments: str
    optimizer_states: int
    bucket_bytes: int
    bucket_count: int
    dpu: bool
    staging_chunk_elems: int
    staging_chunks: int
    device_reserve_bytes: int
    def __init__(self, **fields: Any) -> None: ...

class PlanLine:
    category: str
    place: Place
    bytes: int

class MemoryPlan:
    """offload/memory_plan.h: the bytes of every category on the device and in pinned memory."""

    lines: List[PlanLine]
    def __init__(self, options: PlanOptions) -> None:
        """Raises InvalidArgument naming a bad field."""
    def total(self, place: Place) -> int: ...
    def bytes_of(self, category: str) -> int:
        """Raises InvalidArgument for an unknown category."""
    def check_fits(self, device_capacity: int, host_budget: int) -> None:
        """Raises OutOfMemory listing every line of the side that does not fit."""
    def to_string(self) -> str: ...

# ---- engine -----------------------------------------------------------------------------

class ParamId:
    value: int
    def __init__(self, value: int) -> None: ...
    def __int__(self) -> int: ...
    def __index__(self) -> int: ...
    def __eq__(self, other: object) -> bool: ...
    def __hash__(self) -> int: ...

class ParamSlot:
    id: ParamId
    name: str
    shape: List[int]
    numel: int
    offset: int

class StepTiming:
    step: int
    d2h_ms: float
    h2d_ms: float
    exposed_ms: float
    update_ms: float
    bytes_d2h: int
    bytes_h2d: int

class StepReport:
    step: int
    micro_step: int
    boundary: bool
    applied: bool
    overflow: bool
    deferred: bool
    grad_norm: float
    clip_factor: float
    loss_scale: float
    wait_folds_ms: float
    update_ms: float
    end_step_ms: float
    bytes_d2h: int
    bytes_h2d: int
    timing: Optional[StepTiming]

class Engine:
    """runtime/engine.h: the offload engine of one rank. Long calls release the GIL."""

    finalized: bool
    plan: MemoryPlan
    config: Config
    parameters: List[ParamSlot]
    device: Device
    loss_scale: float
    lr: float
    step: int
    def __init__(self, config: Config, device: Optional[Device] = ...) -> None:
        """Opens config.device (or uses `device`, kept alive). InvalidArgument for a bad config."""
    def add_parameter(self, name: str, shape: Sequence[int], init: Array) -> ParamId:
        """init: float32 with exactly prod(shape) values. InvalidArgument for a bad name/shape."""
    def finalize(self) -> None:
        """Plans, checks the budgets (OutOfMemory with the numbers), allocates, uploads."""
    def preview_plan(self) -> MemoryPlan: ...
    def find(self, name: str) -> ParamId: ...
    def param_ptr(self, param: ParamLike) -> int:
        """Device address of the working weights (config.dtype)."""
    def begin_step(self) -> None: ...
    def grad_slot(self, param: ParamLike) -> int:
        """Device address of this micro-step's gradient slot (config.grad_dtype)."""
    def set_grad(self, param: ParamLike, grad: Array) -> None:
        """Copies a host gradient (dtype config.grad_dtype, the parameter's size) into the
        parameter's slot (grad_slot + a blocking copy after the compute stream)."""
    def grads_ready(self, params: Sequence[ParamLike]) -> None: ...
    def end_step(self) -> StepReport: ...
    def set_lr(self, lr: float) -> None: ...
    def flush(self) -> None: ...
    def master(self, param: ParamLike) -> numpy.ndarray: ...
    def working(self, param: ParamLike) -> numpy.ndarray: ...
    def moment(self, param: ParamLike, which: int) -> numpy.ndarray: ...
    def save_checkpoint(self, dir: str) -> None:
        """Atomically writes dir/zoro.ckpt. IoError when it cannot."""
    def load_checkpoint(self, dir: str) -> None:
        """IoError for a missing, truncated or corrupted checkpoint; InvalidArgument for one
        of another model or optimizer setting (naming the parameter or keys)."""
    def write_trace(self, path: str) -> None: ...
