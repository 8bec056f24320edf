"""The `tcpmax` command line: parse, build the request, call the library, render.

Kept thin on purpose: each subcommand lives in its own module named after it. Usage errors
(bad counts, unknown options, impossible combinations) exit with code 2 before anything
starts; `UsageProblem` raised from inside a command does the same.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sys

import click

from tcpmax import __version__
from tcpmax.cli.doctor import doctor
from tcpmax.cli.fleet import fleet
from tcpmax.cli.load import load
from tcpmax.cli.plan import plan
from tcpmax.cli.prove import prove
from tcpmax.cli.serve import serve
from tcpmax.cli.tune import tune

__all__ = ["cli", "main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="tcpmax")
def cli() -> None:
    """Find, prove and push the real limit of concurrent TCP connections on Linux.

    A TCP connection is a 4-tuple (local IP, local port, remote IP, remote port): one server
    port can hold millions of connections, and a client is limited per (source IP, endpoint)
    by its ephemeral port range, not by 65,535. The real walls are open files, memory and
    kernel queues.

    \b
    Start with:
      tcpmax prove --report r.html  every claim measured here, with verdicts and plots
      tcpmax doctor                 this machine's limits, with the arithmetic
      tcpmax doctor --target 1M     what stands between it and a million connections
      tcpmax tune --target 1M       the exact settings (print; --apply as root)
      tcpmax plan --connections 10M servers, clients and source IPs for a fleet
      tcpmax serve --port 9000      hold connections with near-zero memory each
      tcpmax load 127.0.0.1:9000 -n 1M   open and hold them from many source IPs
      tcpmax load tls://HOST:PORT -n 10k   the same over TLS, handshakes timed
      tcpmax fleet up --clients 3 --servers 3   a lab of hosts behind a kernel balancer
    """


cli.add_command(doctor)
cli.add_command(tune)
cli.add_command(plan)
cli.add_command(serve)
cli.add_command(load)
cli.add_command(prove)
cli.add_command(fleet)


def _silence_stdout() -> None:
    """Point fd 1 at /dev/null so the interpreter's last flush cannot fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno() if sys.stdout is not None else 1)
    os.close(devnull)


def main() -> None:
    """The `tcpmax` entry point: exit 2 on usage errors, 130 on Ctrl-C, and 1 with one line,
    not a traceback, when stdout cannot take the output (closed pipe, full disk)."""
    try:
        # Not standalone: click would print a traceback for a full disk, and exits itself.
        code = cli.main(prog_name="tcpmax", standalone_mode=False)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except (KeyboardInterrupt, click.Abort):
        click.echo("interrupted", err=True)
        sys.exit(130)
    except OSError as exc:
        if exc.errno not in _OUTPUT_ERRNOS:
            raise
        _output_failed(exc)
    _flush_or_exit()
    sys.exit(code if isinstance(code, int) else 0)


# A reader that went away (| head), a full disk (> /dev/full), a closed descriptor (>&-).
_OUTPUT_ERRNOS = {errno.EPIPE, errno.ENOSPC, errno.EIO, errno.EBADF, errno.EDQUOT}


def _flush_or_exit() -> None:
    try:
        if sys.stdout is not None:
            sys.stdout.flush()
    except OSError as exc:
        if exc.errno not in _OUTPUT_ERRNOS:
            raise
        _output_failed(exc)


def _output_failed(exc: OSError) -> None:
    with contextlib.suppress(OSError):
        _silence_stdout()
    if exc.errno != errno.EPIPE:     # the reader that left asked for no more; say nothing
        with contextlib.suppress(OSError):
            click.echo(f"tcpmax: cannot write the output: {exc.strerror}", err=True)
    sys.exit(1)
