"""One budget for a tree of sessions: the root's --max-steps/--max-cost/--max-time bound the
root and every sub-agent together.

Every loop of the tree asks ``admit`` before each model request and calls ``done`` after it. A
request is admitted only while the tree is under its caps *counting the requests already in
flight* (each reserved at the largest cost one request has had so far), so 16 children asking at
once cannot carry the tree past the cap by 16 requests: the overshoot is at most about one. Once a
cap is reached, nobody is admitted again. Costs and steps come from each session's own totals
(``charge``), so the budget costs O(1) per step whatever the size of the tree.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass


@dataclass
class Reached:
    kind: str  # steps | cost | time
    value: float
    limit: float


class TreeBudget:
    def __init__(self, *, max_steps: int | None = None, max_cost: float | None = None,
                 max_time: float | None = None) -> None:
        self.max_steps, self.max_cost, self.max_time = max_steps, max_cost, max_time
        self.started = time.monotonic()
        self._cond = threading.Condition()
        self._sessions: dict[str, tuple[float, int]] = {}  # session id -> (cost, steps)
        self.cost = 0.0
        self.steps = 0
        self._in_flight = 0
        self._largest = 0.0  # the largest cost of one request seen in the tree
        self.reached: Reached | None = None

    @property
    def limited(self) -> bool:
        return self.max_steps is not None or self.max_cost is not None or self.max_time is not None

    def charge(self, session_id: str, cost: float, steps: int, request_cost: float = 0.0) -> None:
        """Session ``session_id``'s totals are now ``cost`` and ``steps`` (not increments: a
        resumed session reports its folded totals, which replace what was known of it)."""
        with self._cond:
            old_cost, old_steps = self._sessions.get(session_id, (0.0, 0))
            self._sessions[session_id] = (cost, steps)
            self.cost += cost - old_cost
            self.steps += steps - old_steps
            self._largest = max(self._largest, request_cost)
            self._cond.notify_all()

    def _over(self) -> Reached | None:
        if self.max_time is not None and time.monotonic() - self.started >= self.max_time:
            return Reached("time", round(time.monotonic() - self.started, 3), self.max_time)
        if self.max_steps is not None and self.steps >= self.max_steps:
            return Reached("steps", self.steps, self.max_steps)
        if self.max_cost is not None and self.cost >= self.max_cost:
            return Reached("cost", round(self.cost, 6), self.max_cost)
        return None

    def _fits(self) -> bool:
        """Room for one more request beside those in flight (one is always let through)."""
        if self._in_flight == 0:
            return True
        if self.max_steps is not None and self.steps + self._in_flight + 1 > self.max_steps:
            return False
        if self.max_cost is not None and self.cost + (self._in_flight + 1) * self._largest > self.max_cost:
            return False
        return True

    def admit(self) -> Reached | None:
        """Reserve one request, waiting while the requests in flight could use up what is left;
        a ``Reached`` when the tree is at a cap (then no request may be sent)."""
        with self._cond:
            while True:
                reached = self.reached or self._over()
                if reached is not None:
                    self.reached = reached
                    self._cond.notify_all()
                    return reached
                if not self.limited or self._fits():
                    self._in_flight += 1
                    return None
                self._cond.wait(0.5)

    def close(self, kind: str) -> None:
        """The root stopped at a limit of its own: no session of the tree is admitted again."""
        with self._cond:
            if self.reached is None:
                value, limit = {"steps": (self.steps, self.max_steps), "cost": (round(self.cost, 6), self.max_cost),
                                "time": (round(time.monotonic() - self.started, 3), self.max_time)}.get(kind, (0, 0))
                self.reached = Reached(kind, value, limit or 0)
            self._cond.notify_all()

    def done(self) -> None:
        """The admitted request ended (answered or failed); charge() has been called for it."""
        with self._cond:
            self._in_flight = max(0, self._in_flight - 1)
            self._cond.notify_all()
