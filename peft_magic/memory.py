"""Memory readouts from the device a model lives on: CUDA, Apple MPS, or process RAM.

Why per device: "memory" means different things. On CUDA the number that decides an
OOM is the caching allocator's (allocated / reserved / peak against the card's total);
on a Mac it is MPS's driver allocation against the recommended maximum; on CPU it is
this process's resident set against the machine's RAM. Every reading carries its
``kind`` so the label always says which one the user is looking at.

Peaks: CUDA keeps its own peak counter (``max_memory_allocated``). MPS and CPU have none
that can be reset, so :class:`PeakSampler` polls in a daemon thread (every 20 ms by
default) for the duration of a block — cheap (one ``psutil`` call per poll) and
independent of what the main thread is doing.
"""

from __future__ import annotations

import os
import sys
import threading
from dataclasses import asdict, dataclass
from typing import Any

from . import events
from .fmt import fmt_bytes
from .rendering import HtmlRepr


@dataclass
class MemoryReading:
    """One reading. Byte counts; ``None`` where the device does not report it."""

    kind: str  # "CUDA" | "MPS" | "RAM"
    device: str  # "cuda:0", "mps", "cpu"
    used: int  # allocated by tensors (CUDA/MPS) or resident set (RAM)
    peak: int | None = None
    total: int | None = None  # device total (card memory, recommended max, machine RAM)
    free: int | None = None
    reserved: int | None = None  # CUDA caching allocator reserve
    process: int | None = None  # this process's use of the device, from NVML where present

    @property
    def label(self) -> str:
        """What the numbers are, for a display: ``CUDA cuda:0`` / ``MPS`` / ``process RAM``."""
        if self.kind == "RAM":
            return "process RAM"
        if self.kind == "MPS":
            return "MPS"
        return f"CUDA {self.device}"

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["label"] = self.label
        return d

    def short(self) -> str:
        """``1.2 GB / 24.0 GB process RAM (peak 1.4 GB)`` — one line for text displays."""
        s = f"{fmt_bytes(self.used)}"
        if self.total:
            s += f" / {fmt_bytes(self.total)}"
        s += f" {self.label}"
        if self.peak is not None:
            s += f" (peak {fmt_bytes(self.peak)})"
        return s


def _torch():
    # Never import torch just to read memory: if it is not loaded, no tensor exists.
    return sys.modules.get("torch")


def device_of(model: Any) -> str:
    """The device of a model's first parameter (``cpu`` when it has none or no torch)."""
    torch = _torch()
    if torch is None or model is None:
        return "cpu"
    try:
        p = next(model.parameters())
    except (StopIteration, AttributeError, TypeError):
        return "cpu"
    return str(p.device)


def _ram_reading() -> MemoryReading:
    import psutil

    proc = psutil.Process(os.getpid())
    vm = psutil.virtual_memory()
    return MemoryReading("RAM", "cpu", used=proc.memory_info().rss, total=vm.total, free=vm.available)


def _nvml_process_bytes(index: int) -> int | None:
    """This process's memory on GPU ``index`` via NVML (nvidia-ml-py), if available."""
    try:
        import pynvml  # provided by nvidia-ml-py
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        pid = os.getpid()
        for getter in (pynvml.nvmlDeviceGetComputeRunningProcesses, pynvml.nvmlDeviceGetGraphicsRunningProcesses):
            for p in getter(handle):
                if p.pid == pid and p.usedGpuMemory is not None:
                    return int(p.usedGpuMemory)
    except Exception:
        return None
    return None


def reading(device: str | None = None) -> MemoryReading:
    """Read memory for ``device`` ("cuda:0", "mps", "cpu"; default: the best one in use)."""
    torch = _torch()
    if device is None:
        device = "cpu"
        if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
            device = f"cuda:{torch.cuda.current_device()}"
    if device.startswith("cuda") and torch is not None and torch.cuda.is_available():
        idx = int(device.split(":")[1]) if ":" in device else torch.cuda.current_device()
        free, total = torch.cuda.mem_get_info(idx)
        return MemoryReading(
            "CUDA", f"cuda:{idx}", used=torch.cuda.memory_allocated(idx), peak=torch.cuda.max_memory_allocated(idx),
            total=total, free=free, reserved=torch.cuda.memory_reserved(idx), process=_nvml_process_bytes(idx),
        )
    if device.startswith("mps") and torch is not None and hasattr(torch, "mps"):
        try:
            used = torch.mps.current_allocated_memory()
            total = torch.mps.recommended_max_memory() if hasattr(torch.mps, "recommended_max_memory") else None
            driver = torch.mps.driver_allocated_memory()
            return MemoryReading("MPS", "mps", used=used, total=total, reserved=driver,
                                 free=(total - driver) if total else None)
        except Exception:
            pass
    return _ram_reading()


_HWM_LOCK = threading.Lock()


def _reset_hwm() -> bool:
    """Reset Linux's peak-RSS counter (VmHWM) for this process; False where unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _read_hwm() -> int | None:
    """Peak RSS since the last reset, in bytes (Linux ``VmHWM``)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _max_rss() -> int | None:
    """This process's peak resident set so far, in bytes (None where unavailable)."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # macOS reports bytes, Linux KiB


def restart_peak(device: str) -> int | None:
    """End the current peak window and start a new one (``--profile``: a peak per phase).

    Returns the ending window's peak: CUDA's allocator counter, or on Linux the process's
    peak RSS (VmHWM; None elsewhere). That peak is folded into every open
    :class:`PeakSampler` first, so resetting the counter never hides a peak from the run
    (or the ``%%peft watch``) that is measuring around it.
    """
    torch = _torch()
    cuda = device.startswith("cuda") and torch is not None and torch.cuda.is_available()
    if cuda:
        peak = int(torch.cuda.max_memory_allocated(device))
        torch.cuda.reset_peak_memory_stats(device)
    else:
        peak = _read_hwm()
        if peak is None or not _reset_hwm():
            return None
    with _HWM_LOCK:
        open_now = list(_open_samplers)
    for sampler in open_now:
        if sampler._cuda == cuda:
            sampler.peak = max(sampler.peak, peak)
    return peak


_open_samplers: list[Any] = []  # PeakSamplers inside their block (see restart_peak)


class PeakSampler:
    """Track the peak of ``reading(device).used`` over a block, polling in a thread.

    On CUDA the allocator's own peak counter is exact and is used instead of polling.
    Use as a context manager; ``peak`` and ``start`` are byte counts.
    """

    def __init__(self, device: str = "cpu", interval: float = 0.02, on_sample: Any = None,
                 live: bool = False) -> None:
        self.device = device
        self.interval = interval
        self.on_sample = on_sample  # called from the sampling thread with each MemoryReading
        self.live = live  # poll in a thread even on CUDA (for a live readout)
        self.start = 0
        self.peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._maxrss0: int | None = None
        self._window = False  # this block's peak window was opened (the counter reset)
        self._cuda = device.startswith("cuda")

    def poll(self) -> int:
        r = reading(self.device)
        used = r.peak if (self._cuda and r.peak is not None) else r.used
        if used > self.peak:
            self.peak = used
        if self.on_sample is not None:
            r.peak = self.peak
            self.on_sample(r)
        return r.used

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.poll()
            except Exception:
                return

    def __enter__(self) -> PeakSampler:
        # A fresh peak window for this block (CUDA's allocator counter, Linux's VmHWM): what
        # the counter held is first folded into every sampler already open, so a nested
        # window (a run inside %%peft watch) never hides the outer one's earlier peak, and
        # no window depends on another having been closed.
        self._window = restart_peak(self.device) is not None
        self.start = reading(self.device).used
        self.peak = self.start
        self._maxrss0 = _max_rss()
        with _HWM_LOCK:
            _open_samplers.append(self)
        if not self._cuda or self.live:
            self._thread = threading.Thread(target=self._run, name="peft_magic-peak", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=1)
        self.poll()
        with _HWM_LOCK:
            if self in _open_samplers:
                _open_samplers.remove(self)
        if not self._cuda:
            # Polling can miss a short spike; the kernel's own high-water marks do not.
            if self._window:  # the counter's peak since the last reset, which was inside this block
                hwm = _read_hwm()
                if hwm is not None:
                    self.peak = max(self.peak, hwm)
            # Elsewhere: the lifetime peak, when it rose during the block, is the block's peak.
            maxrss = _max_rss()
            if maxrss is not None and self._maxrss0 is not None and maxrss > self._maxrss0:
                self.peak = max(self.peak, maxrss)


@dataclass
class WatchReport(HtmlRepr):
    """What ``%%peft watch`` reports: the ``%%time`` of memory."""

    kind: str
    label: str
    start: int
    end: int
    peak: int
    total: int | None
    seconds: float

    def __repr__(self) -> str:
        def signed(n: int) -> str:
            return ("+" if n >= 0 else "−") + fmt_bytes(abs(n))

        return (f"memory ({self.label}): peak {fmt_bytes(self.peak)} ({signed(self.peak - self.start)} over the "
                f"start), now {fmt_bytes(self.end)} (change {signed(self.end - self.start)})"
                + (f" of {fmt_bytes(self.total)}" if self.total else "") + f" · {self.seconds:.2f} s")


class Watch:
    """``%%peft watch`` in the engine: sample memory while a block runs, report peak and change.

    While active it emits ``memory`` events (``live=True``, throttled by ``events.Throttle``
    like training progress) for live readouts, and one final ``memory`` event with the
    reading at the end; ``report`` is set when the block ends.
    """

    def __init__(self, device: str | None = None, rate: float = 4.0) -> None:
        self.device = device or reading().device
        self.throttle = events.Throttle(rate=rate)
        self.sampler = PeakSampler(self.device, interval=0.05, on_sample=self._sample, live=True)
        self.report: WatchReport | None = None
        self._t0 = 0.0

    def _sample(self, r: MemoryReading) -> None:
        if self.throttle.due():
            self.throttle.offer("memory", model_id=None, memory=r.as_dict(), live=True)

    def __enter__(self) -> Watch:
        import time

        self._t0 = time.perf_counter()
        self.sampler.__enter__()
        first = reading(self.device)
        first.peak = self.sampler.peak
        events.emit("memory", model_id=None, memory=first.as_dict(), live=True)
        return self

    def __exit__(self, *exc: object) -> None:
        import time

        self.sampler.__exit__(*exc)
        end = reading(self.device)
        self.report = WatchReport(end.kind, end.label, self.sampler.start, end.used, max(self.sampler.peak, end.used),
                                  end.total, time.perf_counter() - self._t0)
        events.emit("memory", model_id=None, memory=end.as_dict())
