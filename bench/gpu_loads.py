"""A GPU load that the elastic bench switches on and off: a compute hog in a process of its own.

``GpuHog(busy, period_ms)``: a spawned process with its own CUDA context that, while on,
keeps the GPU busy with bf16 matrix products for `busy` of every period and leaves it idle for
the rest (another model, a perception network or a renderer sharing the robot's GPU). Without
MPS, the GPU time-slices between processes' contexts, so the policy's kernels wait while the
hog's run. The interface is the CPU loads' (bench/cpu_loads.py): ``on()``, ``off()``,
``close()``, ``set_level(busy)`` and ``level``.

Memory hardly binds here: the hog holds three small matrices (tens of MB) and the default
model's weights are 4.6 MB, so a GPU of any size has room for both; what it takes away is
compute time.
"""

from __future__ import annotations

import multiprocessing as mp
import time

from cpu_loads import duty_cycle

#: Side lengths tried for the hog's matrix product: the first whose product takes at least
#: GRAIN_S is used, so a busy share is held to about that grain on any GPU.
SIDES = (1024, 2048, 4096, 8192)
GRAIN_S = 1e-4


def _hog(conn, device: str, period_s: float, busy, go, stop) -> None:
    """While `go` is set: from each multiple of `period_s` on the monotonic clock, run matrix
    products for `busy.value` of the period (then wait for them), idle for the rest. Sends
    ("ok", seconds per product, side) or ("error", why)."""
    try:
        import torch

        dev = torch.device(device)
        dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32

        def sync():  # (a CPU device, for tests: its products are synchronous)
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)

        for side in SIDES:
            a = torch.randn(side, side, device=dev, dtype=dtype)
            b = torch.randn(side, side, device=dev, dtype=dtype)
            c = torch.empty_like(a)
            for _ in range(5):
                torch.mm(a, b, out=c)
            sync()
            t0 = time.perf_counter()
            for _ in range(20):
                torch.mm(a, b, out=c)
            sync()
            per = (time.perf_counter() - t0) / 20
            if per >= GRAIN_S:
                break
    except Exception as exc:  # no GPU, no torch: the bench says why
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
        return
    conn.send(("ok", per, side))

    def products(start: float, seconds: float) -> None:
        for _ in range(max(1, round(seconds / per))):
            torch.mm(a, b, out=c)
        sync()

    duty_cycle(go, stop, period_s, busy, products)


class GpuHog:
    """A compute hog on `device` (a process with its own CUDA context); `level` is its busy
    share of every `period_ms`."""

    level_name, heavier_up = "GPU busy share", True
    MAX_BUSY = 0.95

    def __init__(self, busy: float, period_ms: float = 5.0, device: str = "cuda"):
        self._check(busy)
        if not 0.5 <= period_ms <= 100:
            raise SystemExit(f"error: --gpu-period-ms {period_ms} must be in [0.5, 100]")
        ctx = mp.get_context("spawn")  # CUDA cannot be used in a forked child
        self.stop, self.go = ctx.Event(), ctx.Event()
        self.busy = ctx.Value("d", busy, lock=False)
        mine, theirs = ctx.Pipe(duplex=False)
        self.proc = ctx.Process(target=_hog, daemon=True, args=(
            theirs, device, period_ms * 1e-3, self.busy, self.go, self.stop))
        self.proc.start()
        answer = mine.recv() if mine.poll(120) else ("error", "no answer in 120 s")
        if answer[0] != "ok":
            self.close()
            raise SystemExit(f"error: --load gpu cannot start its hog on {device}: {answer[1]}")
        self.product_s, self.side = answer[1], answer[2]
        self.period_ms = period_ms
        self.level, self._on = busy, False

    def _check(self, busy: float) -> None:
        if not 0 < busy <= self.MAX_BUSY:
            raise SystemExit(f"error: --gpu-busy {busy} must be in (0, {self.MAX_BUSY}]")

    def set_level(self, busy) -> None:
        self._check(float(busy))
        self.level = self.busy.value = float(busy)

    def on(self) -> None:
        self._on = True
        self.go.set()

    def off(self) -> None:
        self._on = False
        self.go.clear()

    def close(self) -> None:
        self.stop.set()
        self.go.set()  # wakes the hog to see `stop`
        self.proc.join(timeout=5)
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join(timeout=5)
