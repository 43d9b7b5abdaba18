"""Zero-copy Python access to squall object blobs and the node cache.

The serializer (squall._blob: dumps_blob/loads_blob over cache_blob.h) round-trips
objects and NumPy arrays with out-of-band buffers, keeps them 64-byte aligned and
never copies them on load; malformed blobs raise instead of crashing. CacheReader
resolves keys of a cache that another process writes (the tiny _CacheWriter below,
which is cache_store, i.e. what squall-cache runs) into read-only arrays over the
shared mapping, which stay valid after the writer replaced or evicted the value.
"""
from __future__ import annotations

import json
import os
import pickle
import random
import shutil
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest

import squall
from squall import _squall
from squall._blob import BLOB_MAGIC, dumps_blob, is_blob, loads_blob

SQ_ECORRUPT = squall.errors["SQ_ECORRUPT"][0]
MB = 1 << 20


# ---- helpers --------------------------------------------------------------------

def aligned_copy(data: bytes) -> memoryview:
    """`data` copied to a 64-byte aligned address (a read-only view; the backing array
    stays alive through the view)."""
    raw = np.empty(len(data) + 64, dtype=np.uint8)
    off = (-raw.ctypes.data) % 64
    raw[off:off + len(data)] = np.frombuffer(data, dtype=np.uint8)
    return memoryview(raw[off:off + len(data)]).toreadonly()


def address(buf) -> int:
    """Address of the first byte of a bytes-like (0-length buffers have none)."""
    return np.frombuffer(buf, dtype=np.uint8).ctypes.data


def assert_same_array(got, want) -> None:
    assert type(got) is np.ndarray
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_array_equal(got, want)


# ---- blob round trips -------------------------------------------------------------

@pytest.mark.parametrize("obj", [
    b"", b"x" * 100_000, "unicode \u2603", 12345, None,
    {"a": 1, "b": [1.5, b"two", ("t", None)], 3: {"nested": {}}},
    [bytearray(b"abc"), frozenset({1, 2})],
], ids=["empty-bytes", "100k-bytes", "str", "int", "none", "dict", "list"])
def test_blob_round_trips_plain_objects(obj):
    blob = dumps_blob(obj)
    assert blob[:4] == BLOB_MAGIC and is_blob(blob)
    assert loads_blob(blob) == obj


DTYPES = ["<f8", "<f4", "<i8", "|u1", "<c16", "|b1", ">i4", "<M8[ns]", "|S5", "<U3"]
SHAPES = [(0,), (7,), (3, 4), (2, 3, 5), ()]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("order", ["C", "F"])
def test_blob_round_trips_numpy_arrays(dtype, shape, order):
    rng = np.random.default_rng(7)
    n = int(np.prod(shape))
    flat = rng.integers(0, 100, size=n).astype(dtype)
    want = np.asarray(flat.reshape(shape), order=order)
    got = loads_blob(dumps_blob(want))
    assert_same_array(got, want)
    if want.ndim > 1:
        assert got.flags.f_contiguous == want.flags.f_contiguous
        assert got.flags.c_contiguous == want.flags.c_contiguous


def test_blob_keeps_non_contiguous_arrays_and_subclasses_correct():
    base = np.arange(60.0).reshape(6, 10)
    strided = base[::2, 1::3]
    masked = np.ma.masked_array([1.0, 2.0, 3.0], mask=[False, True, False])
    obj = {"strided": strided, "masked": masked, "objects": np.array([1, "a", None])}
    got = loads_blob(dumps_blob(obj))
    assert_same_array(got["strided"], strided)
    assert isinstance(got["masked"], np.ma.MaskedArray)
    assert got["masked"].mask.tolist() == [False, True, False]
    assert got["objects"].tolist() == [1, "a", None]


def test_blob_round_trips_nested_structures_with_several_arrays():
    arrays = [np.arange(1000, dtype="<f8") * i for i in range(5)]
    fortran = np.asfortranarray(np.arange(24, dtype="<i2").reshape(4, 6))
    obj = {"layers": [{"w": a, "name": f"l{i}"} for i, a in enumerate(arrays)],
           "meta": ("model", 3, fortran), "blob": b"raw"}
    blob = dumps_blob(obj)
    _, _, _, buffers = _squall.blob_parse(blob)
    assert len(buffers) == 6  # every array went out of band
    got = loads_blob(blob)
    for i, a in enumerate(arrays):
        assert_same_array(got["layers"][i]["w"], a)
        assert got["layers"][i]["name"] == f"l{i}"
    assert_same_array(got["meta"][2], fortran)
    assert got["meta"][2].flags.f_contiguous and got["blob"] == b"raw"


def test_every_buffer_is_64_byte_aligned_in_an_aligned_blob():
    sizes = [1, 3, 63, 64, 65, 1000, 4097]
    obj = [np.full(n, n % 251, dtype=np.uint8) for n in sizes] + [np.arange(7, dtype="<f8")]
    view = aligned_copy(dumps_blob(obj))
    assert address(view) % 64 == 0
    _, _, stream, buffers = _squall.blob_parse(view)
    assert len(buffers) == len(obj)
    for buf, n in zip(buffers, sizes + [56]):
        assert buf.nbytes == n and address(buf) % 64 == 0
    got = loads_blob(view)
    for a, b in zip(got, obj):
        assert_same_array(a, b)
        assert a.ctypes.data % 64 == 0 and a.flags.aligned


def test_loaded_arrays_are_read_only_views_of_the_blob():
    want = np.arange(10_000, dtype="<f8")
    blob = bytearray(dumps_blob({"a": want}))  # writable source
    got = loads_blob(blob)["a"]
    assert_same_array(got, want)
    assert not got.flags.writeable
    assert np.shares_memory(got, np.frombuffer(blob, dtype=np.uint8))
    with pytest.raises(ValueError):
        got[0] = 1.0
    with pytest.raises(BufferError):  # the views pin the bytearray's storage
        blob.extend(b"x")


def test_is_blob_tells_a_blob_from_a_cloudpickle_body():
    assert is_blob(dumps_blob(b"x"))
    assert not is_blob(pickle.dumps(b"x", protocol=5))
    assert not is_blob(b"")


# ---- malformed blobs -------------------------------------------------------------

def sample_blob() -> bytes:
    return dumps_blob({"a": np.arange(100, dtype="<f8"), "b": np.ones((3, 3), "<i4"),
                       "s": "text"})


def assert_corrupt(data) -> None:
    with pytest.raises(squall.SquallError) as info:
        loads_blob(data)
    assert info.value.code == SQ_ECORRUPT


def test_every_truncation_of_a_blob_raises_corrupt():
    blob = sample_blob()
    for n in range(len(blob)):
        assert_corrupt(blob[:n])
    assert_corrupt(blob + b"\0")  # the canonical layout also fixes the end


def test_random_bytes_never_parse():
    rng = random.Random(4)
    for _ in range(2000):
        n = rng.choice([0, 3, 47, 48, 49, 64, 200, 1000])
        data = bytes(rng.getrandbits(8) for _ in range(n))
        if rng.random() < 0.5:
            data = BLOB_MAGIC + data[4:]  # get past the magic check
        with pytest.raises(squall.SquallError):
            loads_blob(data)


def test_mutated_blobs_raise_or_load_but_never_crash():
    blob = sample_blob()
    header = 48  # sizes live here: any change breaks the canonical layout
    rng = random.Random(5)
    corrupt = 0
    for _ in range(3000):
        data = bytearray(blob)
        i = rng.randrange(len(data))
        data[i] ^= 1 << rng.randrange(8)
        try:
            with warnings.catch_warnings():  # a flipped dtype code may be deprecated
                warnings.simplefilter("ignore")
                loads_blob(bytes(data))
        except squall.SquallError as e:
            assert e.code in (SQ_ECORRUPT, squall.errors["SQ_EUNKNOWNTYPE"][0])
            corrupt += 1
        except Exception:  # a damaged table or stream: pickle's or NumPy's errors
            assert i >= header
    assert corrupt > 0


def test_blob_encode_rejects_what_it_cannot_lay_out():
    with pytest.raises(BufferError):
        _squall.blob_encode(b"", [np.arange(10.0)[::2]])
    with pytest.raises(squall.LatticeError):
        _squall.blob_encode(b"", [], 0)  # NONE is not storable
    with pytest.raises(TypeError):
        _squall.blob_encode(b"", [1])


# ---- CacheReader over a cache written by another process ------------------------------

WRITER = r"""
import json, sys
from squall import _squall
w = _squall._CacheWriter(sys.argv[1], budget=int(sys.argv[2]), discard=True)
print(json.dumps({"ok": True}), flush=True)
for line in sys.stdin:
    cmd = json.loads(line)
    try:
        if cmd["op"] == "put":
            with open(cmd["path"], "rb") as f:
                w.put(cmd["key"], f.read())
        elif cmd["op"] == "delete":
            w.delete(cmd["key"])
        out = {"ok": True, "stats": w.stats()}
    except Exception as e:
        out = {"ok": False, "error": repr(e)}
    print(json.dumps(out), flush=True)
w.close()
"""


class Writer:
    """A cache_store writer in a child process, driven line by line."""

    def __init__(self, directory: Path, budget: int = 0) -> None:
        self.dir = directory
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            [str(Path(squall.__file__).parent.parent)] + sys.path))
        self.proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(directory), str(budget)], env=env,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert json.loads(self.proc.stdout.readline())["ok"]

    def _cmd(self, **cmd) -> dict:
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        out = json.loads(self.proc.stdout.readline())
        assert out["ok"], out
        return out["stats"]

    def put(self, key: str, obj) -> dict:
        path = self.dir.parent / "put.blob"
        path.write_bytes(dumps_blob(obj))
        return self._cmd(op="put", key=key, path=str(path))

    def delete(self, key: str) -> dict:
        return self._cmd(op="delete", key=key)

    def close(self) -> None:
        self.proc.stdin.close()
        assert self.proc.wait(timeout=30) == 0


@pytest.fixture
def cache():
    root = Path(tempfile.mkdtemp(prefix="squall-pycache-",
                                 dir="/dev/shm" if os.path.isdir("/dev/shm") else None))
    writer = Writer(root / "cache", budget=64 * MB)
    try:
        yield writer
    finally:
        writer.close()
        shutil.rmtree(root, ignore_errors=True)


def segment_ranges(directory: Path) -> list[tuple[int, int]]:
    """Address ranges of this process's mappings of the cache's segment files."""
    seg = str(directory / "segments")
    ranges = []
    with open("/proc/self/maps") as f:
        for line in f:
            if seg in line:
                lo, hi = line.split()[0].split("-")
                ranges.append((int(lo, 16), int(hi, 16)))
    return ranges


def test_reader_returns_read_only_arrays_over_the_shared_mapping(cache):
    want = np.arange(MB, dtype="<f8")  # 8 MB: a segment
    cache.put("big", want)
    r = _squall.CacheReader(str(cache.dir))
    a, b = r.get("big"), r.get(b"big")
    assert_same_array(a, want)
    assert not a.flags.writeable and a.ctypes.data % 64 == 0
    assert np.shares_memory(a, b)  # the same mapping, twice
    assert any(lo <= a.ctypes.data and a.ctypes.data + a.nbytes <= hi
               for lo, hi in segment_ranges(cache.dir))
    with pytest.raises(ValueError):
        a[0] = 1.0
    r.close()


def test_reader_resolves_small_inline_values_aligned_and_read_only(cache):
    want = {"w": np.arange(100, dtype="<i4"), "s": "small"}
    cache.put("small", want)
    r = _squall.CacheReader(str(cache.dir))
    got = r.get("small")
    assert got["s"] == "small"
    assert_same_array(got["w"], want["w"])
    assert not got["w"].flags.writeable and got["w"].ctypes.data % 64 == 0
    assert r.mappings == 0  # inline: a private aligned copy, no segment
    lattice_type, meta, stream, buffers = r.lookup("small")
    assert lattice_type == squall.LatticeType.LWW and meta == b""
    assert pickle.loads(stream, buffers=buffers)["s"] == "small"


def test_missing_key_raises_key_error_and_bad_keys_type_error(cache):
    cache.put("present", 1)
    r = _squall.CacheReader(str(cache.dir))
    with pytest.raises(KeyError) as info:
        r.get("absent")
    assert info.value.args == ("absent",)
    with pytest.raises(KeyError):
        r.lookup(b"absent")
    with pytest.raises(TypeError):
        r.get(42)
    assert r.get("present") == 1


def test_array_stays_valid_after_the_value_is_replaced(cache):
    old = np.arange(MB, dtype="<f8")
    cache.put("k", old)
    r = _squall.CacheReader(str(cache.dir))
    held = r.get("k")
    cache.put("k", old * 2)  # new segment; the old file is unlinked
    assert_same_array(r.get("k"), old * 2)
    assert_same_array(held, old)
    assert r.trim() == 0  # the old mapping is still in use by `held`
    del held
    assert r.trim() == 1  # last array gone: the unlinked segment is unmapped


def test_array_stays_valid_after_the_value_is_evicted(cache):
    cache.close()
    cache.__init__(cache.dir, budget=20 * MB)  # room for two 8 MB values only
    first = np.full(MB, 3.0)
    cache.put("a", first)
    r = _squall.CacheReader(str(cache.dir))
    held = r.get("a")
    cache.put("b", np.zeros(MB))
    stats = cache.put("c", np.ones(MB))
    assert stats["evictions"] >= 1
    with pytest.raises(KeyError):
        r.get("a")
    assert_same_array(held, first)
    assert float(held.sum()) == 3.0 * MB


def test_values_outlive_a_closed_reader(cache):
    cache.put("k", np.arange(MB, dtype="<i8"))
    r = _squall.CacheReader(str(cache.dir))
    a = r.get("k")
    r.close()
    assert int(a[-1]) == MB - 1
    with pytest.raises(ValueError):
        r.get("k")


def test_reader_refuses_a_directory_without_a_cache(tmp_path):
    with pytest.raises(squall.SquallError):
        _squall.CacheReader(str(tmp_path / "nothing-here"))


# ---- through the real squall-cache daemon ------------------------------------------

def _daemon_harness():
    """test_cache_daemon's CacheDaemon/Executor and a KVS node, or a skip."""
    try:
        import test_cache_daemon as tcd
        from kvs_harness import AnnaClient, KvsNode, bin_dir
        if not (bin_dir() / "squall-cache").exists():
            raise FileNotFoundError("squall-cache")
    except (ImportError, FileNotFoundError, RuntimeError) as e:
        pytest.skip(f"squall-kvs/squall-cache not available: {e}")
    return tcd, AnnaClient, KvsNode


def test_objects_written_by_dumps_blob_reach_readers_through_squall_cache(tmp_path):
    tcd, AnnaClient, KvsNode = _daemon_harness()
    kvs = KvsNode(tmp_path / "kvs", threads=1).start()
    daemon = tcd.CacheDaemon(tmp_path, kvs).start()
    executor = tcd.Executor(daemon, tmp_path)
    try:
        want = np.arange(MB, dtype="<f8").reshape(1024, 1024)
        small = {"w": np.arange(10, dtype="<i2"), "tag": "small"}
        with AnnaClient(kvs.routing) as anna:
            for key, obj in (("big", want), ("small", small)):
                value = tcd.CB.Value(body=dumps_blob(obj), type=0).SerializeToString()
                anna.put_lww(key, value, 1000)
            anna.put_lww("plain", b"not a squall object", 1000)
        for key in ("big", "small", "plain"):
            assert executor.get(key).error == 0  # the daemon fetched and stored it
        r = _squall.CacheReader(str(daemon.dir))
        a, b = r.get("big"), r.get("big")
        assert_same_array(a, want)
        assert np.shares_memory(a, b) and not a.flags.writeable
        assert a.ctypes.data % 64 == 0
        got = r.get("small")
        assert got["tag"] == "small"
        assert_same_array(got["w"], small["w"])
        with pytest.raises(ValueError):
            r.get("plain")  # a raw lattice payload: lookup() only
        lattice_type, meta, stream, buffers = r.lookup("plain")
        assert meta[0] == 2 and buffers == []
        assert squall.decode_lww(bytes(stream)) == (1000, b"not a squall object")
        r.close()
    finally:
        executor.close()
        daemon.stop()
        kvs.stop()
