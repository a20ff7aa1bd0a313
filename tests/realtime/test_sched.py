"""Real-time scheduling of the inference worker (vocex.realtime.sched): what it reports is
what the thread got, and a refusal falls back and says why."""

from __future__ import annotations

import os
import threading

import pytest

from vocex.realtime import sched
from vocex.realtime.sched import Scheduling, raise_worker_priority


def _in_thread(fn):
    """Run ``fn(tid)`` in a new thread; returns its result and the thread's policy/priority/nice
    read from inside it."""
    box = {}

    def body():
        tid = threading.get_native_id()
        box["result"] = fn(tid)
        box["policy"] = os.sched_getscheduler(tid)
        box["priority"] = os.sched_getparam(tid).sched_priority
        box["nice"] = os.getpriority(os.PRIO_PROCESS, tid)

    t = threading.Thread(target=body)
    t.start()
    t.join()
    return box


POLICY_KINDS = ("fifo", "rr")


@pytest.mark.parametrize("policy", POLICY_KINDS)
def test_the_result_is_what_the_worker_thread_got(policy):
    main_policy = os.sched_getscheduler(threading.get_native_id())
    box = _in_thread(lambda tid: raise_worker_priority(tid, policy=policy, rt_priority=3, nice=-5))
    got: Scheduling = box["result"]
    if got.kind in POLICY_KINDS:
        assert got.kind == policy and box["policy"] == getattr(os, sched.POLICIES[policy])
        assert box["priority"] == got.value <= 3
    elif got.kind == "nice":
        assert box["policy"] == os.SCHED_OTHER and box["nice"] == got.value and "refused" in got.reason
    else:
        assert got.kind == "none" and "refused" in got.reason
    # only the worker thread changed
    assert os.sched_getscheduler(threading.get_native_id()) == main_policy
    assert got.describe()


def test_a_refused_real_time_policy_falls_back_to_nice(monkeypatch):
    def refuse(*args):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "sched_setscheduler", refuse)
    box = _in_thread(lambda tid: raise_worker_priority(tid, nice=-3))
    got = box["result"]
    assert "SCHED_FIFO refused" in got.reason
    if got.kind == "nice":
        assert box["nice"] == got.value <= -3 and "nice" in got.describe()
    else:  # not even nice allowed here
        assert got.kind == "none" and "nice -3 refused" in got.reason


def test_everything_refused_leaves_the_thread_and_says_why(monkeypatch):
    def refuse(*args):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "sched_setscheduler", refuse)
    monkeypatch.setattr(os, "setpriority", refuse)
    box = _in_thread(lambda tid: raise_worker_priority(tid))
    got = box["result"]
    assert got.kind == "none" and box["policy"] == os.SCHED_OTHER
    assert got.describe() == ("normal scheduling (SCHED_FIFO refused (needs CAP_SYS_NICE or an rtprio limit, "
                              "e.g. the audio group); nice -10 refused (needs CAP_SYS_NICE or a nice limit))")
    with pytest.raises(ValueError, match="policy must be"):
        raise_worker_priority(policy="deadline")
