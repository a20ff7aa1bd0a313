"""Real-time scheduling for the inference worker thread.

A real-time audio program runs its worker under a real-time policy (SCHED_FIFO or
SCHED_RR) at a priority below the audio server's, so a browser, a game or a build beside it
cannot delay an inference; where the system refuses that (no CAP_SYS_NICE and an
RLIMIT_RTPRIO of 0, the default outside the ``audio`` group), a raised nice value is the next
best thing.  :func:`raise_worker_priority` tries both for one thread (Linux applies both
calls to a single thread when given its native id) and says what it got.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass

# JACK2 runs its server at real-time priority 10 by default (jackd -P) and its clients'
# process threads one below: the worker stays under both
DEFAULT_RT_PRIORITY = 5
DEFAULT_NICE = -10
POLICIES = {"fifo": "SCHED_FIFO", "rr": "SCHED_RR"}


@dataclass(frozen=True)
class Scheduling:
    """What a thread got: ``kind`` ``fifo``/``rr`` (real-time at ``value``), ``nice`` (that
    nice value), or ``none`` (unchanged); ``reason``: why a better kind was refused."""

    kind: str
    value: int
    reason: str = ""

    def label(self) -> str:
        """What it got, in a word or two (the status line)."""
        return {"fifo": f"SCHED_FIFO {self.value}", "rr": f"SCHED_RR {self.value}",
                "nice": f"nice {self.value}", "none": "normal scheduling"}[self.kind]

    def describe(self) -> str:
        """One short line for stats and the start-up line: what it got, and why not better."""
        return f"{self.label()} ({self.reason})" if self.reason else self.label()

    def to_json(self) -> dict[str, object]:
        """The ``scheduling`` entry of ``vocex-live --stats-json``."""
        return {"kind": self.kind, "value": self.value, "reason": self.reason, "text": self.describe()}


def raise_worker_priority(tid: int | None = None, policy: str = "fifo", rt_priority: int = DEFAULT_RT_PRIORITY,
                          nice: int = DEFAULT_NICE) -> Scheduling:
    """Give thread ``tid`` (a native thread id; None: the calling thread,
    :func:`threading.get_native_id`) the real-time ``policy`` (``fifo`` or ``rr``) at
    ``rt_priority`` (capped at what RLIMIT_RTPRIO allows an unprivileged process), else the
    nice value ``nice`` (only ever raising its priority), else nothing.  Never raises for a
    refusal: the result says what the thread got and why not better."""
    if policy not in POLICIES:
        raise ValueError(f"policy must be one of {', '.join(POLICIES)}, got {policy!r}")
    tid = threading.get_native_id() if tid is None else tid
    reasons = []
    sched = getattr(os, POLICIES[policy], None)
    if sched is None or not hasattr(os, "sched_setscheduler"):
        reasons.append(f"{POLICIES[policy]} not available on this system")
    else:
        priority = rt_priority
        try:
            import resource

            soft = resource.getrlimit(resource.RLIMIT_RTPRIO)[0]
            if 0 < soft < priority:  # unprivileged: the limit is the most allowed (privileged: ignored)
                priority = soft
        except (ImportError, AttributeError, OSError):
            pass
        try:
            os.sched_setscheduler(tid, sched, os.sched_param(priority))
            return Scheduling(policy, priority)
        except PermissionError:
            reasons.append(f"{POLICIES[policy]} refused (needs CAP_SYS_NICE or an rtprio limit, e.g. the audio group)")
        except OSError as exc:
            reasons.append(f"{POLICIES[policy]} failed ({exc.strerror or exc})")
    try:
        current = os.getpriority(os.PRIO_PROCESS, tid)
        if current <= nice:
            return Scheduling("nice", current, "; ".join(reasons + [f"nice already {current}"]))
        os.setpriority(os.PRIO_PROCESS, tid, nice)
        return Scheduling("nice", os.getpriority(os.PRIO_PROCESS, tid), "; ".join(reasons))
    except PermissionError:
        reasons.append(f"nice {nice} refused (needs CAP_SYS_NICE or a nice limit)")
    except (OSError, AttributeError) as exc:
        reasons.append(f"nice failed ({getattr(exc, 'strerror', None) or exc})")
    return Scheduling("none", 0, "; ".join(reasons))
