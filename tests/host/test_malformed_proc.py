"""A /proc snapshot with a malformed file: that fact is unknown with a reason, the report is
still written, and an unknown limit never turns into "reachable"."""

import io
import json
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rich.console import Console

from tcpmax.cli.doctor import render_doctor
from tcpmax.host.inspect import read_host
from tcpmax.model.capacity import Costs
from tcpmax.model.doctor import build_doctor_report
from tcpmax.model.schema import to_jsonable
from tests.conftest import FAKE_PROC_FILES

GARBAGE = st.one_of(
    st.sampled_from(["", "abc", "-5", "1 2", "1\t2\t3\t4", "99999999999999999999999999",
                     "0x10", "\x00\xff", "Max open files  lots  of", "CapEff:\tzz",
                     "MemTotal: x kB", "Cpus_allowed_list:\t3-1", "70000-1", "1-2-3"]),
    st.text(max_size=40),
)


def _tree(root: Path, broken: str, text: str) -> None:
    for rel, content in {**FAKE_PROC_FILES, broken: text}.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content.encode("utf-8", "surrogateescape"))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(broken=st.sampled_from(sorted(FAKE_PROC_FILES)), text=GARBAGE)
def test_any_malformed_file_gives_a_report_not_a_traceback(broken, text):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        _tree(root, broken, text)
        facts = read_host(root)
    report = build_doctor_report(facts, Costs(), target=1_000_000)
    json.dumps(to_jsonable(report))
    render_doctor(report, Console(file=io.StringIO(), width=120))
    for assessment in report.assessments.values():
        if assessment.reachable:
            assert not assessment.unknown


def test_a_port_range_with_one_number_is_unknown_with_its_reason(tmp_path):
    _tree(tmp_path, "sys/net/ipv4/ip_local_port_range", "32768")
    facts = read_host(tmp_path)
    assert facts.port_range is None
    assert "net.ipv4.ip_local_port_range" in facts.unknown


def test_an_unreadable_limit_makes_the_verdict_cannot_judge_not_reachable(tmp_path):
    _tree(tmp_path, "sys/fs/file-max", "lots")
    report = build_doctor_report(read_host(tmp_path), Costs(), target=1_000)
    server = report.assessments["server"]
    assert not server.reachable
    assert any("fs.file-max" in title for title in server.unknown)
