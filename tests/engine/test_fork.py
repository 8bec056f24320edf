"""fork_child: the one way tcpmax forks. Every path out of the child is an exit code."""

import os
import signal
import sys
import time

from tcpmax.engine.supervisor import fork_child
from tcpmax.host.process import running


def _wait(pid):
    _pid, status = os.waitpid(pid, 0)
    return status


def test_the_child_exits_with_what_its_target_returns():
    assert os.WEXITSTATUS(_wait(fork_child(lambda: None))) == 0
    assert os.WEXITSTATUS(_wait(fork_child(lambda: 7))) == 7


def test_an_exception_in_the_child_exits_1_with_its_traceback(capfd):
    def boom():
        raise RuntimeError("boom in the child")

    status = _wait(fork_child(boom))
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 1
    assert "RuntimeError: boom in the child" in capfd.readouterr().err


def test_sys_exit_in_the_child_keeps_its_code():
    assert os.WEXITSTATUS(_wait(fork_child(lambda: sys.exit(3)))) == 3


def test_the_child_never_returns_into_the_callers_code():
    r, w = os.pipe()
    pid = fork_child(lambda: None)
    if pid == 0:             # only a child that came back from fork_child gets here
        os.write(w, b"returned")
        os._exit(0)
    _wait(pid)
    os.close(w)
    assert os.read(r, 100) == b""
    os.close(r)


def test_the_child_dies_with_its_parent():
    r, w = os.pipe()

    def middle():
        # The middle process forks a grandchild that would sleep forever, then dies.
        grandchild = fork_child(lambda: time.sleep(60) and None)
        os.write(w, str(grandchild).encode())
        os.kill(os.getpid(), signal.SIGKILL)

    middle_pid = fork_child(middle)
    grandchild = int(os.read(r, 32))
    _wait(middle_pid)
    os.close(r)
    os.close(w)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if not running(grandchild):
            break
        time.sleep(0.02)
    else:
        os.kill(grandchild, signal.SIGKILL)
        raise AssertionError("the grandchild outlived its parent")


def test_a_code_the_kernel_cannot_carry_exits_1_instead_of_escaping_into_the_caller():
    r, w = os.pipe()
    pid = fork_child(lambda: 300)
    if pid == 0:             # only a child that came back from fork_child gets here
        os.write(w, b"returned")
        os._exit(0)
    assert os.WEXITSTATUS(_wait(pid)) == 1
    os.close(w)
    assert os.read(r, 100) == b""
    os.close(r)


_CTRL_C_DURING_FORK = """
import os, signal
from tcpmax.engine.supervisor import fork_child

armed = [True]

def ctrl_c_now():
    # Runs inside os.fork(), where a KeyboardInterrupt would be printed and dropped.
    if armed[0]:
        armed[0] = False
        os.kill(os.getpid(), signal.SIGINT)

os.register_at_fork(before=ctrl_c_now)
try:
    fork_child(lambda: None)
except KeyboardInterrupt:
    print("raised")
else:
    print("dropped")
"""


def test_a_ctrl_c_during_the_fork_is_raised_in_the_parent_not_dropped():
    import subprocess

    out = subprocess.run([sys.executable, "-c", _CTRL_C_DURING_FORK], capture_output=True,
                         text=True, timeout=30)
    assert out.stdout.strip() == "raised", out.stderr
