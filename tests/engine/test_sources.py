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
