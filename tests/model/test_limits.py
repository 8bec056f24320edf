"""doctor, tune and plan never recommend a sysctl value the kernel refuses."""

from hypothesis import given, settings
from hypothesis import strategies as st

from tcpmax.model.capacity import Role
from tcpmax.model.limits import MAX_FLEET_CONNECTIONS, MAX_HOST_CONNECTIONS, kernel_max
from tcpmax.model.plan import MachineSpec, PlanRequest, plan_fleet
from tcpmax.model.target import assess_target
from tests.model.test_target import HOST


@settings(max_examples=200, deadline=None)
@given(target=st.integers(1, MAX_HOST_CONNECTIONS), role=st.sampled_from(list(Role)))
def test_a_target_never_asks_for_a_sysctl_above_the_kernel_maximum(target, role):
    for change in assess_target(HOST, target, role).sysctls:
        ceiling = kernel_max(change.name)
        if ceiling is not None and change.value.isdigit():
            assert int(change.value) <= ceiling, change


@settings(max_examples=200, deadline=None)
@given(target=st.integers(1, MAX_HOST_CONNECTIONS), role=st.sampled_from(list(Role)))
def test_a_target_never_asks_for_an_open_file_limit_above_fs_nr_open_maximum(target, role):
    nofile = assess_target(HOST, target, role).nofile_single_process
    assert nofile <= (kernel_max("fs.nr_open") or 0)


@settings(max_examples=100, deadline=None)
@given(connections=st.integers(1, MAX_FLEET_CONNECTIONS),
       nofile=st.integers(65, kernel_max("fs.nr_open") or 0))
def test_a_fleet_plan_never_asks_for_a_sysctl_above_the_kernel_maximum(connections, nofile):
    spec = MachineSpec(64 * 2**30, 16, nofile, 0.2)
    result = plan_fleet(PlanRequest(connections, spec, spec))
    for side in (result.servers, result.clients):
        for change in side.settings:
            ceiling = kernel_max(change.name)
            if ceiling is not None and change.value.isdigit():
                assert int(change.value) <= ceiling, change
