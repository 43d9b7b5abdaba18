"""How a remote failure record becomes the exception a caller catches (issue 6): the
remote type when it is importable, squall's own failure kinds as their own classes
(all RemoteError subclasses, a remote timeout also a TimeoutError), and anything else a
RemoteError carrying the type name, traceback and executor. No cluster needed.
"""
from __future__ import annotations

import pytest

import squall
from squall import _api
from squall._wire import GenericResponse

EXECUTION_ERROR, NO_RESOURCES = 3, 5


def record(error_type: str, message: str = "it broke", tb: str = "Traceback: here",
           error: int = EXECUTION_ERROR) -> GenericResponse:
    return GenericResponse(False, "k", error, message, error_type, tb, "10.0.0.1:2")


@pytest.mark.parametrize("type_name,cls", [
    ("squall.TimeoutError", squall.RemoteTimeoutError),
    ("squall.ExecutorCrashed", squall.ExecutorCrashed),
    ("squall.NoExecutors", squall.NoExecutors),
])
def test_squall_failure_kinds_raise_their_own_remote_error_class(type_name, cls):
    exc = _api.remote_exception(record(type_name, error=NO_RESOURCES))
    assert type(exc) is cls and isinstance(exc, squall.RemoteError)
    assert exc.type_name == type_name and exc.executor == "10.0.0.1:2"
    assert exc.remote_traceback == "Traceback: here"
    assert "it broke" in str(exc)


def test_a_remote_timeout_is_caught_as_a_timeout_error():
    with pytest.raises(TimeoutError):
        raise _api.remote_exception(record("squall.TimeoutError"))


def test_importable_remote_type_is_rebuilt_with_the_traceback_as_cause():
    exc = _api.remote_exception(record("builtins.ValueError", "bad value"))
    assert type(exc) is ValueError and str(exc) == "bad value"
    assert "Traceback: here" in str(exc.__cause__)
    assert any("10.0.0.1:2" in note for note in exc.__notes__)


def test_unknown_squall_kind_and_unimportable_types_become_remote_error():
    for name in ("squall.SomethingNew", "nowhere.module.Oops"):
        exc = _api.remote_exception(record(name))
        assert type(exc) is squall.RemoteError and exc.type_name == name
