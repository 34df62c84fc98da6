"""Stop requests: what Ctrl-C and SIGTERM mean, and that a stop never splits the recording of an
event (on disk and in the state, or neither)."""

from __future__ import annotations

import os
import signal

import pytest

from kimi_code.agent.stop_signals import StopSignals


def test_sigterm_inside_a_critical_block_waits_for_its_end() -> None:
    notices: list[str] = []
    done: list[str] = []
    with StopSignals(notices.append) as signals:
        with pytest.raises(KeyboardInterrupt):
            with signals.critical():
                os.kill(os.getpid(), signal.SIGTERM)
                done.append("written")
                done.append("applied")
        assert done == ["written", "applied"] and signals.terminated
    assert signal.getsignal(signal.SIGTERM) is not signals._on_sigterm  # handlers put back


def test_first_ctrl_c_asks_second_stops_and_a_model_request_stops_at_once() -> None:
    notices: list[str] = []
    with StopSignals(notices.append) as signals:
        os.kill(os.getpid(), signal.SIGINT)
        assert signals.stop_requested and notices == ["stopping after the running tool (Ctrl-C again to stop now)"]
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    with StopSignals(notices.append) as signals:
        signals.phase = "model"
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)


def test_a_failed_block_keeps_its_error_and_leaves_no_stale_stop() -> None:
    with StopSignals(lambda text: None) as signals:
        with pytest.raises(ValueError):
            with signals.critical():
                os.kill(os.getpid(), signal.SIGTERM)
                raise ValueError("the write failed")
        with signals.critical():  # no stop left over from the block above
            pass
