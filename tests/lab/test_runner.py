"""The runner passes C7's kernel figure on to C12 only when C7 judged it plausible."""

from typing import Any

from tcpmax.lab import c07_memory, c12_fleet, runner
from tcpmax.lab.common import Verdict
from tcpmax.model.capacity import DEFAULT_KERNEL_BYTES_PER_SOCKET
from tests.lab.test_c12 import fleet_lab


def _c7_measuring(monkeypatch, kernel_bytes: int) -> None:
    def fake() -> dict[str, Any]:
        return {"kernel_bytes_per_socket": kernel_bytes, "kernel_samples": [kernel_bytes],
                "kernel_bytes_per_loopback_connection": 2 * kernel_bytes,
                "serve_user_bytes_per_connection": 10.0, "connections": 1}
    monkeypatch.setattr(c07_memory, "measure", fake)
    # Only the paper half of C12 reads C7's figure; its fleet lab is tested in test_c12.py.
    monkeypatch.setattr(c12_fleet, "measure_fleet", lambda *a, **kw: fleet_lab())


def _c12_kernel_bytes(report: runner.ProveReport) -> int:
    c12 = next(o for o in report.outcomes if o.id == "C12")
    return int(c12.measurements["kernel_bytes_per_socket"])


def test_a_plausible_c7_figure_sizes_the_c12_fleet(monkeypatch):
    _c7_measuring(monkeypatch, 4_500)
    report = runner.prove(["C7", "C12"])
    assert report.outcomes[0].verdict is Verdict.CONFIRMED
    assert _c12_kernel_bytes(report) == 4_500


def test_an_implausible_c7_figure_from_a_busy_host_is_not_used_by_c12(monkeypatch):
    _c7_measuring(monkeypatch, 12)           # Slab shrank under the probe: noise, not a cost
    report = runner.prove(["C7", "C12"])
    assert report.outcomes[0].verdict is not Verdict.CONFIRMED
    assert _c12_kernel_bytes(report) == DEFAULT_KERNEL_BYTES_PER_SOCKET
