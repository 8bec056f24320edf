"""The memory guard: below the MemAvailable floor, load opens nothing more and says so."""

from tcpmax.engine.loader import LoadRun
from tcpmax.host.inspect import read_meminfo
from tcpmax.model.load import Endpoint, LoadConfig, default_min_free
from tests.servers import plain_server


def test_a_floor_above_what_is_available_stops_the_load_before_it_opens_anything():
    floor = read_meminfo()["MemTotal"]          # never available: triggers on any machine
    with plain_server() as (host, port):
        result = LoadRun(LoadConfig(endpoints=(Endpoint(host, port),), connections=500,
                                    hold=0.0, min_free=floor)).run()
    assert result.stopped_by == "memory floor"
    assert result.peak_established == 0 and not result.reached
    assert result.min_free_bytes == floor
    assert result.mem_available_at_floor_bytes is not None
    assert result.mem_available_at_floor_bytes < floor


def test_a_floor_far_below_what_is_available_lets_the_load_complete():
    with plain_server() as (host, port):
        result = LoadRun(LoadConfig(endpoints=(Endpoint(host, port),), connections=500,
                                    hold=0.0, min_free=1)).run()
    assert result.stopped_by == "completed" and result.peak_established == 500
    assert result.mem_available_at_floor_bytes is None


def test_the_default_floor_is_a_thirty_second_of_ram_and_at_least_256_mib():
    assert default_min_free(24 * 2**30) == 768 * 2**20
    assert default_min_free(2 * 2**30) == 256 * 2**20
    assert default_min_free(None) == 256 * 2**20
