"""Loaded (from PYTHONPATH) only by tests/faketime/run: time.sleep without clock_nanosleep.

libfaketime 0.9.10 (Debian 12) and CPython 3.11 disagree about timed waits: with the
monotonic clock faked, a lock or Event waiting with a timeout (sem_clockwait) never wakes;
with it left alone (FAKETIME_DONT_FAKE_MONOTONIC=1, as the run script sets) waits work,
but time.sleep, which sleeps until an absolute CLOCK_MONOTONIC time, fails with EINVAL.
select() with a relative timeout sleeps the same time and is not shifted."""

import select
import time


def _sleep(seconds: float) -> None:
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        select.select([], [], [], left)


time.sleep = _sleep
