"""One machine's part of a cluster run: `python -m tcpmax.engine.shard`, started by a Dask task.

The shard is a process of its own (not the Dask worker) so that the load engine may fork its
workers before any event loop or thread exists in it: a Dask worker has both. It runs the
same `LoadRun` as `tcpmax load`, and speaks lines on its pipes with the task that started it
(engine/cluster.py owns the other end):

- stdin: first the run's `LoadConfig` (base64 of a pickle, one line), then commands:
  ``start WALL`` (begin the ramp at that time.time()), ``release WALL`` (the hold starts at
  that time on every machine), ``stop`` (end early, as Ctrl-C would). End of file means the
  task (or its Dask worker) is gone: the shard stops and reaps its workers, never orphaned.
- stdout: JSON lines, each with an ``event``: ``ready`` (planned, waiting for start),
  ``progress`` (counters once a second), ``ramp_done`` (every local worker made its
  last attempt), ``result`` (the `tcpmax.load/1` document, with its histograms).

A shard that hears nothing (no start, no release) for `SYNC_TIMEOUT` seconds goes on by
itself, so every shard stays bounded in time even when the coordinator vanishes.
"""

from __future__ import annotations

import base64
import json
import os
import pickle
import signal
import sys
import threading
import time
from typing import Any

from tcpmax.engine.loader import LoadError, LoadProgress, LoadRun
from tcpmax.model.load import LoadConfig
from tcpmax.model.schema import Schema, document

__all__ = ["SYNC_TIMEOUT", "main"]

SYNC_TIMEOUT = 60.0

_out_lock = threading.Lock()


def _say(event: str, **fields: Any) -> None:
    with _out_lock:
        sys.stdout.write(json.dumps({"event": event, **fields}) + "\n")
        sys.stdout.flush()


class _Commands:
    """What the task said on stdin, filled in by a reader thread."""

    def __init__(self) -> None:
        self.start = threading.Event()
        self.start_wall = 0.0
        self.release_wall: float | None = None
        self.stopped = False

    def read(self) -> None:
        for line in sys.stdin:
            word, _, arg = line.strip().partition(" ")
            if word == "start":
                self.start_wall = float(arg)
                self.start.set()
            elif word == "release":
                self.release_wall = float(arg)
            elif word == "stop":
                break
        # "stop" or end of file: the task or its worker is gone. SIGTERM is what the
        # supervisor already handles (reaps every worker, reports the run).
        self.stopped = True
        self.start.set()
        os.kill(os.getpid(), signal.SIGTERM)


def _monotonic_of(wall: float) -> float:
    return time.monotonic() + (wall - time.time())


def main() -> int:
    cfg = pickle.loads(base64.b64decode(sys.stdin.readline()))
    if not isinstance(cfg, LoadConfig):
        print("tcpmax shard: stdin did not start with a LoadConfig", file=sys.stderr)
        return 2
    try:
        run = LoadRun(cfg)
    except (ValueError, LoadError) as exc:
        _say("failed", error=str(exc))
        return 2
    commands = _Commands()
    # Until the run's own handlers are in place, a stop only has to end this process.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    threading.Thread(target=commands.read, daemon=True).start()
    _say("ready", workers=run.plan.workers, strategy=run.plan.strategy.value,
         sources=len(run.plan.sources), warnings=list(run.plan.warnings))
    if not commands.start.wait(SYNC_TIMEOUT) or commands.stopped:
        _say("failed", error="no start from the coordinator")
        return 3
    delay = commands.start_wall - time.time()
    if delay > 0:
        time.sleep(min(delay, SYNC_TIMEOUT))
    signal.signal(signal.SIGTERM, signal.SIG_DFL)

    waited: list[float] = []

    def release_at(ramp_done: float) -> float | None:
        if not waited:
            waited.append(ramp_done)
            _say("ramp_done")
        if commands.release_wall is not None:
            return _monotonic_of(commands.release_wall)
        if time.monotonic() - waited[0] > SYNC_TIMEOUT:
            return time.monotonic()      # the coordinator is gone: hold and finish alone
        return None

    def progress(p: LoadProgress) -> None:
        _say("progress", elapsed=round(p.elapsed, 2), established=p.established,
             attempted=p.attempted, in_flight=p.in_flight, errors=p.errors,
             rate=round(p.rate, 1))

    result = run.run(on_progress=progress, progress_every=1.0,
                     log=lambda msg: print(msg, file=sys.stderr), release_at=release_at)
    _say("result", doc=document(Schema.LOAD, result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
