"""mpservice.multiprocessing.runner: ProcessRunner and ProcessRunnee (SPEC section 4)."""

import os
import signal
import time

import pytest

from _runner_targets import Abstract, FailingInit, Scaler
from mpservice.multiprocessing import ProcessFailedError, SpawnProcess
from mpservice.multiprocessing.remote_exception import RemoteTraceback, is_remote_exception
from mpservice.multiprocessing.runner import ProcessRunnee, ProcessRunner


@pytest.fixture
def runners():
    """Runners made by a test; each is reaped (killed if need be) at the end."""
    made = []
    yield made
    for r in made:
        p = r.process
        if p._popen is None:
            continue
        if p.exitcode is None:
            p.kill()
        try:
            p.join(30)
        except BaseException:
            pass
        assert p.exitcode is not None, "a runner's process did not end"


def test_runnee_is_abstract():
    with pytest.raises(TypeError):
        Abstract()
    assert issubclass(Scaler, ProcessRunnee)
    s = Scaler()
    assert s.__enter__() is s
    assert s.__exit__(None, None, None) is None


def test_calls_with_args_and_kwargs(runners):
    r = ProcessRunner(target=Scaler, args=(3,), kwargs={"offset": 1}, name="scaler")
    runners.append(r)
    with r:
        assert isinstance(r.process, SpawnProcess)
        assert r.process.name == "scaler"
        assert r(2) == 7
        assert r(x=10) == 31
        entered, calls, pid = r(action="state")
        assert entered is True
        assert calls == 3
        assert pid == r.process.pid != os.getpid()
    assert r.process.exitcode == 0


def test_restart_rejoin_in_order(runners):
    r = ProcessRunner(target=Scaler)
    runners.append(r)
    r.start()
    for i in range(20):
        r.restart(i)
    assert [r.rejoin() for _ in range(20)] == [2 * i for i in range(20)]
    r.join(30)
    assert r.process.exitcode == 0


def test_rejoin_without_call(runners):
    r = ProcessRunner(target=Scaler)
    runners.append(r)
    with r:
        with pytest.raises(RuntimeError, match="restart"):
            r.rejoin()


def test_exception_raised_with_remote_traceback(runners):
    r = ProcessRunner(target=Scaler)
    runners.append(r)
    with r:
        with pytest.raises(ValueError, match="bad input 4") as info:
            r(4, action="raise")
        e = info.value
        assert is_remote_exception(e)
        assert isinstance(e.__cause__, RemoteTraceback)
        text = str(e.__cause__)
        assert text.startswith(f"[{r.process.name}] Traceback")
        assert "in __call__" in text and "raise ValueError" in text
        assert r(5) == 10  # the runnee survives its exception


def test_returned_exception_is_not_raised(runners):
    r = ProcessRunner(target=Scaler)
    runners.append(r)
    with r:
        value = r(action="return_exception")
        assert type(value) is KeyError
        assert value.args == ("returned, not raised",)


def test_dead_process_raises_instead_of_hanging(runners):
    r = ProcessRunner(target=Scaler)
    runners.append(r)
    with r:
        t0 = time.monotonic()
        with pytest.raises(ProcessFailedError, match="status 5") as info:
            r(action="exit")
        assert time.monotonic() - t0 < 20
        assert info.value.exitcode == 5
        with pytest.raises(ProcessFailedError):
            r(1)  # no more calls
    # __exit__ did not raise the failure a second time.


def test_killed_while_busy(runners):
    r = ProcessRunner(target=Scaler)
    runners.append(r)
    r.start()
    r.restart(30, action="sleep")
    time.sleep(0.3)
    r.process.kill()
    with pytest.raises(ProcessFailedError) as info:
        r.rejoin()
    assert info.value.signal == signal.SIGKILL


def test_result_queued_before_death_is_delivered(runners):
    r = ProcessRunner(target=Scaler)
    runners.append(r)
    r.start()
    r.restart(21)
    r.restart(action="exit")
    assert r.rejoin() == 42
    with pytest.raises(ProcessFailedError):
        r.rejoin()


def test_failing_constructor(runners):
    r = ProcessRunner(target=FailingInit)
    runners.append(r)
    r.start()
    r.restart()
    with pytest.raises(RuntimeError, match="cannot build the runnee"):
        r.rejoin()


def test_join_ends_process(runners):
    r = ProcessRunner(target=Scaler)
    runners.append(r)
    r.start()
    assert r(1) == 2
    r.join(30)
    assert r.process.done()
    assert r.process.exitcode == 0
