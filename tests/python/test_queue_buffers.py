"""Large messages and buffers: bytes, bytearray, numpy arrays (pickle
protocol 5 out-of-band for ours), mixed containers. Round trips go through
an echo child process shared by the module (one per implementation).
"""

from __future__ import annotations

import pytest

np = pytest.importorskip("numpy")

import _helpers  # noqa: E402
from conftest import Impl, call_in_thread  # noqa: E402

MiB = 1024 * 1024


class Echo:
    def __init__(self, name):
        import multiprocessing as mp

        self.impl = Impl(name)
        self.q_in = self.impl.Queue()
        self.q_out = self.impl.Queue()
        self.proc = mp.get_context("spawn").Process(
            target=_helpers.echo_worker, args=(self.q_in, self.q_out), daemon=True
        )
        self.proc.start()

    def roundtrip(self, x, timeout=120):
        self.q_in.put(x)
        return self.q_out.get(timeout=timeout)

    def close(self):
        try:
            self.q_in.put(None)
        except Exception:
            pass
        self.proc.join(30)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(5)
        exitcode = self.proc.exitcode
        self.proc.close()
        self.impl.cleanup()
        return exitcode


@pytest.fixture(scope="module", params=["stdlib", "ours"])
def echo(request):
    e = Echo(request.param)
    yield e
    assert e.close() == 0


def _bytes_payload(size):
    unit = bytes(range(256))
    b = unit * (size // 256) + unit[: size % 256]
    if size >= 16:
        b = b"HEAD" + b[4:-4] + b"TAIL"
    return b


@pytest.mark.parametrize("size", [0, 1, 65_535, 65_537, MiB + 3, 64 * MiB], ids=str)
def test_bytes_roundtrip(echo, size):
    b = _bytes_payload(size)
    got = echo.roundtrip(b)
    assert type(got) is bytes
    assert len(got) == size
    assert got == b


@pytest.mark.parametrize("size", [0, 10, 8 * MiB + 1], ids=str)
def test_bytearray_roundtrip(echo, size):
    ba = bytearray(_bytes_payload(size))
    got = echo.roundtrip(ba)
    assert type(got) is bytearray
    assert got == ba
    got[:0] = b""  # mutable
    if size:
        got[0] ^= 0xFF
        assert got[0] != ba[0]


def _arrays():
    rng = np.random.default_rng(0)
    base = rng.standard_normal((600, 500))
    rec = np.zeros(1000, dtype=[("a", "<i4"), ("b", "<f8"), ("c", "S3")])
    rec["a"] = np.arange(1000)
    rec["b"] = np.linspace(0, 1, 1000)
    rec["c"] = b"xyz"
    return {
        "float64-2d-8MiB": rng.standard_normal((1024, 1024)),
        "uint8-16MiB": (np.arange(16 * MiB) % 251).astype(np.uint8),
        "int32-3d": np.arange(64 * 64 * 64, dtype=np.int32).reshape(64, 64, 64),
        "int64-bigendian": np.arange(5000, dtype=">i8"),
        "bool": rng.random(10_001) > 0.5,
        "complex128": (rng.standard_normal((100, 100)) + 1j).astype(np.complex128),
        "float32-fortran": np.asfortranarray(rng.standard_normal((300, 200)).astype(np.float32)),
        "noncontiguous-view": base[::2, ::3],
        "empty": np.zeros((0, 5), dtype=np.float64),
        "0d": np.array(3.5),
        "structured": rec,
        "object": np.array([1, "a", None, (2, 3)], dtype=object),
        "datetime64": np.arange("2024-01-01", "2024-03-01", dtype="datetime64[D]"),
        "float16": np.linspace(-1, 1, 4097, dtype=np.float16),
    }


ARRAY_IDS = list(_arrays())


@pytest.mark.parametrize("name", ARRAY_IDS)
def test_numpy_roundtrip(echo, name):
    a = _arrays()[name]
    got = echo.roundtrip(a)
    assert type(got) is np.ndarray
    if echo.impl.ours:
        assert got.dtype == a.dtype
    else:
        # the stdlib pickles with protocol 4, under which numpy turns a
        # non-native byte order into the native one
        assert got.dtype.newbyteorder("=") == a.dtype.newbyteorder("=")
    assert got.shape == a.shape
    if a.dtype == object:
        assert got.tolist() == a.tolist()
    else:
        assert np.array_equal(got, a)
    if a.flags.f_contiguous and not a.flags.c_contiguous:
        assert got.flags.f_contiguous
    assert got.flags.writeable, "received numpy array is read-only"
    if got.size and a.dtype != object:
        got.flat[0] = got.flat[-1]  # really writable


def test_received_arrays_are_independent(echo):
    """A received array keeps its contents while more traffic flows, and
    writing into it affects nothing else (no aliasing of queue memory)."""
    shape = (512, 1024)  # 4 MiB of float64
    first_src = np.full(shape, 1.0)
    first = echo.roundtrip(first_src)
    others = []
    for k in range(2, 12):
        others.append(echo.roundtrip(np.full(shape, float(k))))
    assert np.all(first == 1.0)
    first[:] = -1.0
    for k, o in zip(range(2, 12), others):
        assert np.all(o == float(k))
    assert np.all(first_src == 1.0)
    again = echo.roundtrip(first_src)
    assert np.all(again == 1.0)
    assert not np.shares_memory(again, first)


def test_mixed_container(echo):
    rng = np.random.default_rng(1)
    a = rng.integers(0, 1000, size=(256, 256), dtype=np.int64)
    obj = {
        "arrays": [a, a[::2], np.arange(10, dtype=np.float32)],
        "bytes": _bytes_payload(3 * MiB),
        "bytearray": bytearray(b"z" * (2 * MiB)),
        "blob": _helpers.Blob(b"out-of-band" * 100_000),
        "small": (1, "two", None, 3.0, b"", bytearray()),
        "scalar": np.float64(2.5),
        "point": _helpers.Point(np.int32(3), [a[0, :3]]),
    }
    got = echo.roundtrip(obj)
    assert set(got) == set(obj)
    assert all(np.array_equal(x, y) for x, y in zip(got["arrays"], obj["arrays"]))
    assert all(x.flags.writeable for x in got["arrays"])
    assert got["bytes"] == obj["bytes"] and type(got["bytes"]) is bytes
    assert got["bytearray"] == obj["bytearray"] and type(got["bytearray"]) is bytearray
    assert got["blob"] == obj["blob"]
    assert got["small"] == obj["small"]
    assert type(got["small"][5]) is bytearray
    assert got["scalar"] == 2.5 and type(got["scalar"]) is np.float64
    assert got["point"].x == 3 and np.array_equal(got["point"].y[0], a[0, :3])


def test_same_buffer_twice_in_one_message(echo):
    """One array referenced twice stays one object after the trip."""
    a = np.arange(MiB, dtype=np.uint8)
    got = echo.roundtrip([a, a, {"again": a}])
    assert got[0] is got[1] and got[2]["again"] is got[0]
    assert np.array_equal(got[0], a)


def test_many_1mib_messages_pipelined(echo):
    n = 48
    msgs = [np.full(MiB // 8, i, dtype=np.float64) for i in range(n)]
    for m in msgs:
        echo.q_in.put(m)
    for i in range(n):
        got = echo.q_out.get(timeout=120)
        assert got.shape == (MiB // 8,) and got[0] == i and got[-1] == i


def test_numpy_writable_in_child(impl, procs):
    q_in, q_out = impl.Queue(), impl.Queue()
    p = procs.start(_helpers.sum_numpy, q_in, q_out)
    arrays = [np.ones((1000, 1000)), np.arange(10, dtype=np.int16), np.zeros(0)]
    for a in arrays:
        q_in.put(a)
    q_in.put(None)
    for a in arrays:
        dt, shape, writeable, total = q_out.get(timeout=60)
        assert (dt, shape) == (a.dtype.str, a.shape)
        assert writeable
        assert total == float(a.sum())
    procs.join(p)


# ---------------------------------------------------------------------------
# ours only
# ---------------------------------------------------------------------------


def test_put_snapshots_buffers_at_put_time(ours):
    """better: put pickles in the caller's thread, so mutating an array or
    bytearray after put() does not change what is received (the stdlib's
    feeder thread may pickle it later)."""
    q = ours.Queue()
    a = np.zeros(2 * MiB, dtype=np.uint8)
    ba = bytearray(MiB)
    q.put(a)
    q.put(ba)
    a[:] = 7
    ba[:] = b"\x07" * MiB
    got_a = q.get(timeout=10)
    got_ba = q.get(timeout=10)
    assert not got_a.any()
    assert got_ba == bytearray(MiB)


def test_large_in_process_and_many(ours):
    q = ours.Queue()
    big = np.arange(8 * MiB, dtype=np.int64)  # 64 MiB
    call_in_thread(q.put_many, [big, big[::-1].copy(), b"x" * (3 * MiB)], timeout=60)
    got = []
    while len(got) < 3:
        got.extend(q.get_many(2, timeout=30))
    assert np.array_equal(got[0], big)
    assert np.array_equal(got[1], big[::-1])
    assert got[2] == b"x" * (3 * MiB)
    assert got[0].flags.writeable and got[1].flags.writeable


def test_simplequeue_large_in_process(ours):
    q = ours.SimpleQueue()
    a = np.random.default_rng(2).standard_normal(2 * MiB)  # 16 MiB
    call_in_thread(q.put, a, timeout=60)
    got = q.get()
    assert np.array_equal(got, a) and got.flags.writeable


def test_64mib_roundtrip_through_bounded_queue(ours, procs):
    q_in, q_out = ours.Queue(1), ours.Queue(1)
    p = procs.start(_helpers.echo_worker, q_in, q_out)
    b = _bytes_payload(64 * MiB)
    for _ in range(2):
        q_in.put(b, timeout=60)
        assert q_out.get(timeout=60) == b
    q_in.put(None)
    procs.join(p)
