"""zoro: a ZeRO-Offload-style training runtime, from Python.

The C++ core (zoro._zoro, typed in _zoro.pyi) is re-exported here:

* the CPU optimizers on NumPy arrays and CPU tensors, in place: adam_step, adagrad_step,
  lion_step with AdamConfig / AdagradConfig / LionConfig and a CpuExecutor;
* the engine's configuration (Config), its memory plan (MemoryPlan), the Engine itself with
  its StepReport and checkpoints;
* the device layer's memory: open_device, Device.allocate, PinnedPool;
* the errors: zoro.Error and its subclasses (InvalidArgument is also a ValueError,
  OutOfMemory a MemoryError, IoError an OSError, Unsupported a NotImplementedError).

zoro.torch (imported on its own: ``import zoro.torch``) holds Adam and AdamW, torch.optim
optimizers whose fp32 master weights and moments live in zoro's pinned host memory.
"""

from ._zoro import *  # noqa: F401,F403  (the names are listed in _zoro.pyi)

__version__ = "0.1.0"
