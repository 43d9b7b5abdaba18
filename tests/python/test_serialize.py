"""squall._serialize.load: the rules every executor argument is decoded by (PROTOCOL.md
§3.2), on its fast path (bytes bodies of DEFAULT values) and off it."""
from __future__ import annotations

import pickle

import pytest

from squall._serialize import DEFAULT, NUMPY, STRING, dump, dump_object, load


@pytest.mark.parametrize("value", [7, -1.5, True, None, 3 + 4j, (1, "a"), [1, {2: 3}]])
def test_pickled_values_round_trip(value):
    assert load(*dump(value)) == value


def test_default_bytes_that_do_not_unpickle_come_back_as_the_same_bytes():
    assert load(DEFAULT, b"not a pickle") == b"not a pickle"
    assert load(DEFAULT, b"") == b""


def test_default_bytes_that_happen_to_be_a_pickle_are_unpickled_as_cloudburst_does():
    assert load(DEFAULT, pickle.dumps(42)) == 42


def test_bodies_as_memoryview_or_bytearray_decode_like_bytes():
    body = pickle.dumps({"k": 1})
    assert load(DEFAULT, memoryview(body)) == {"k": 1}
    assert load(DEFAULT, bytearray(body)) == {"k": 1}
    assert load(DEFAULT, memoryview(b"raw")) == b"raw"


def test_a_blob_body_is_read_as_a_blob_and_blob_lookalikes_stay_bytes():
    np = pytest.importorskip("numpy")
    arr = np.arange(100000, dtype=np.int64)
    kind, body = dump_object(arr)
    assert bytes(body[:4]) == b"SQOB"
    assert (load(kind, body) == arr).all()
    assert load(DEFAULT, b"SQOB but not a blob") == b"SQOB but not a blob"


def test_strings_and_the_refused_numpy_type():
    assert load(STRING, "héllo".encode()) == "héllo"
    with pytest.raises(ValueError, match="NUMPY"):
        load(NUMPY, b"x")
