"""f.map's progress bar (issue 6): tqdm (a declared dependency) draws it -- tqdm.auto,
so a notebook gets its widget -- and a plain counter on stderr stands in when tqdm
cannot be imported. No cluster needed: the bar is driven directly.
"""
from __future__ import annotations

import sys

import pytest

from squall import _api


def test_progress_bar_is_tqdm_auto_and_counts_to_the_total(capsys):
    from tqdm.auto import tqdm
    bar = _api._progress_bar(5, "square")
    assert isinstance(bar, tqdm)
    for _ in range(5):
        bar.update(1)
    bar.close()
    err = capsys.readouterr().err
    assert "square" in err and "5/5" in err


def test_progress_bar_falls_back_to_a_counter_without_tqdm(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)  # import raises ImportError
    bar = _api._progress_bar(3, "inc")
    assert isinstance(bar, _api._TextProgress)
    for _ in range(3):
        bar.update(1)
    bar.close()
    err = capsys.readouterr().err
    assert err.endswith("inc: 3/3\n") and "inc: 0/3" in err


def test_tqdm_is_a_declared_dependency():
    from importlib import metadata
    requires = metadata.requires("squall") or []
    assert any(r.split(">")[0].split("=")[0].strip() == "tqdm" for r in requires)


@pytest.mark.parametrize("total", [0, 1])
def test_counter_handles_tiny_totals(total, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    bar = _api._progress_bar(total, "f")
    for _ in range(total):
        bar.update(1)
    bar.close()
    assert f"f: {total}/{total}" in capsys.readouterr().err
