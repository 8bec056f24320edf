"""`doctor --measure`: kernel bytes per socket, measured for real on loopback."""

import os

from tcpmax.engine.memprobe import measure_kernel_bytes_per_socket


def open_fds():
    return len(os.listdir("/proc/self/fd"))


def test_measurement_opens_and_closes_every_socket():
    before = open_fds()
    m = measure_kernel_bytes_per_socket(pairs=500, rounds=1, settle=0.05)
    assert m.sockets == 1000 and m.rounds == 1 and len(m.samples) == 1
    assert open_fds() == before


def test_kernel_cost_of_an_idle_socket_is_kilobytes_not_bytes_or_megabytes():
    # Slab growth per socket measured 3.8 KB here; the band allows other kernels' layouts.
    m = measure_kernel_bytes_per_socket(pairs=4000, rounds=3, settle=0.2)
    assert 1_000 < m.bytes_per_socket < 16_000, m
