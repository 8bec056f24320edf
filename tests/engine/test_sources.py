"""`--source` is checked for being an address of this host, and only that."""

import socket

import pytest

from tcpmax.engine.loader import LoadError, check_sources
from tests.conftest import in_own_netns


def test_an_address_that_is_not_on_this_host_is_refused():
    with pytest.raises(LoadError, match=r"--source 198\.18\.0\.77 is not an address of this host"):
        check_sources(("127.0.0.2", "198.18.0.77"), 4)


def test_loopback_addresses_are_local():
    check_sources(("127.0.0.2", "127.3.4.5"), 4)
    check_sources(("::1",), 6)


def _check_with_every_port_taken() -> str:
    held = []
    for port in range(40000, 40010):                 # the whole (narrowed) range, taken
        s = socket.socket()
        s.bind(("127.0.0.2", port))
        held.append(s)
    try:
        check_sources(("127.0.0.2",), 4)
        return "accepted"
    except LoadError as exc:
        return str(exc)
    finally:
        for s in held:
            s.close()


@pytest.mark.root
def test_a_source_whose_ports_are_all_in_use_is_still_local():
    # A port range full of TIME_WAIT once made the check answer EADDRINUSE: it must look at
    # the address only.
    verdict = in_own_netns(_check_with_every_port_taken,
                           {"net.ipv4.ip_local_port_range": "40000 40009"})
    assert verdict == "accepted"


def _explicit_load_beside_a_wildcard_listener() -> dict[str, object]:
    from tcpmax.engine.loader import LoadRun
    from tcpmax.model.load import Endpoint, LoadConfig, PortStrategy
    from tests.servers import plain_server

    squatter = socket.socket()              # another program's listener, on all addresses
    squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    squatter.bind(("0.0.0.0", 40005))
    squatter.listen()
    try:
        with plain_server(processes=1) as address:
            run = LoadRun(LoadConfig((Endpoint(*address),), 19, sources=("127.0.0.3",),
                                     port_strategy=PortStrategy.EXPLICIT, hold=0.2))
            result = run.run()
        return {"usable": len(run.ports), "held": result.peak_established,
                "errors": result.error_counts}
    finally:
        squatter.close()


@pytest.mark.root
def test_explicit_ports_skip_a_port_another_program_listens_on_for_all_addresses():
    out = in_own_netns(_explicit_load_beside_a_wildcard_listener,
                       {"net.ipv4.ip_local_port_range": "40000 40019"})
    assert out == {"usable": 19, "held": 19, "errors": {}}


def _explicit_load_beside_outbound_connections() -> dict[str, object]:
    from tcpmax.engine.loader import LoadRun
    from tcpmax.model.load import Endpoint, LoadConfig, PortStrategy
    from tests.servers import plain_server

    with plain_server(processes=1) as address:
        others = []                     # another program's connections, from ports of the range
        for port in (40000, 40001, 40002, 40003):
            s = socket.socket()
            s.bind(("127.0.0.3", port))
            s.connect(address)
            others.append(s)
        try:
            result = LoadRun(LoadConfig((Endpoint(*address),), 30, sources=("127.0.0.3",),
                                        port_strategy=PortStrategy.EXPLICIT,
                                        hold=0.2)).run()
        finally:
            for s in others:
                s.close()
    return {"held": result.peak_established, "errors": result.error_counts}


@pytest.mark.root
def test_explicit_ports_held_by_another_programs_connections_fall_back_to_the_kernel(hot_path):
    out = in_own_netns(_explicit_load_beside_outbound_connections,
                       {"net.ipv4.ip_local_port_range": "40000 40999"})
    assert out == {"held": 30, "errors": {}}


def _load_toward_the_lab_range(gateway: str) -> str:
    """In a fresh namespace whose only route out is a default route via `gateway` (on a veth
    pair with both ends inside it: nothing leaves the namespace), build a load toward
    198.18.99.1."""
    import subprocess

    from tcpmax.engine.loader import LoadError, LoadRun
    from tcpmax.model.load import Endpoint, LoadConfig

    for cmd in (["link", "add", "d0", "type", "veth", "peer", "name", "d1"],
                ["link", "set", "lo", "up"], ["link", "set", "d1", "up"],
                ["link", "set", "d0", "up"], ["addr", "add", "10.9.0.2/24", "dev", "d0"],
                ["addr", "add", "198.18.0.2/24", "dev", "d0"],
                ["route", "add", "default", "via", gateway, "dev", "d0"]):
        subprocess.run(["ip", *cmd], check=True, capture_output=True)
    try:
        LoadRun(LoadConfig((Endpoint("198.18.99.1", 9000),), 10))
    except LoadError as exc:
        return str(exc)
    return "built"


@pytest.mark.root
def test_a_lab_address_routed_out_through_a_gateway_outside_the_lab_is_refused():
    out = in_own_netns(lambda: _load_toward_the_lab_range("10.9.0.1"))
    assert "gateway 10.9.0.1" in out and "nothing sent" in out


@pytest.mark.root
def test_a_lab_address_routed_through_a_gateway_inside_the_lab_is_loaded():
    assert in_own_netns(lambda: _load_toward_the_lab_range("198.18.0.1")) == "built"
