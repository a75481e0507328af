"""The elastic bench's GPU load (bench/gpu_loads.py), run here on the CPU device: the hog
process starts, reports its product's cost, follows on/off and its level, refuses a level out of
range, and ends with close(). On a GPU the same process runs its products with CUDA."""

import time

import pytest
from gpu_loads import GpuHog


def test_gpu_hog_interface_on_the_cpu_device():
    hog = GpuHog(0.5, period_ms=20.0, device="cpu")
    try:
        assert hog.product_s > 0 and hog.side >= 1024
        assert hog.level == 0.5 and hog.level_name == "GPU busy share"
        hog.on()
        time.sleep(0.2)
        hog.set_level(0.2)
        assert hog.level == 0.2 and hog.busy.value == 0.2
        hog.off()
        with pytest.raises(SystemExit, match="--gpu-busy"):
            hog.set_level(1.5)
    finally:
        hog.close()
    assert not hog.proc.is_alive()


def test_gpu_hog_on_a_missing_device_is_a_clear_error():
    with pytest.raises(SystemExit, match="cannot start its hog"):
        GpuHog(0.5, device="cuda:7")
