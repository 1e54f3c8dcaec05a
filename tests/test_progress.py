"""Progress bars only on a terminal; elsewhere at INFO, a loop logs at most one line per PROGRESS_LOG_SECONDS."""

import io
import logging

import pytest

from embedensemble import _logging
from embedensemble._logging import progress, progress_enabled


class FakeStderr(io.StringIO):
    def __init__(self, terminal):
        super().__init__()
        self.terminal = terminal

    def isatty(self):
        return self.terminal


@pytest.fixture()
def info_level():
    logger = logging.getLogger("embedensemble")
    level = logger.level
    logger.setLevel(logging.INFO)
    yield
    logger.setLevel(level)


def test_bars_only_on_a_terminal(info_level, monkeypatch):
    from tqdm.auto import tqdm

    monkeypatch.setattr("sys.stderr", FakeStderr(terminal=True))
    assert progress_enabled() and isinstance(progress(range(3), desc="x"), tqdm)
    monkeypatch.setattr("sys.stderr", FakeStderr(terminal=False))
    assert not progress_enabled()
    assert not isinstance(progress(range(3), desc="x"), tqdm)
    assert progress_enabled(True) and not progress_enabled(False)  # an explicit choice wins


def test_off_a_terminal_a_long_loop_logs_rate_limited_lines(info_level, monkeypatch, caplog):
    monkeypatch.setattr("sys.stderr", FakeStderr(terminal=False))
    clock = iter(range(0, 10_000, 5))  # every step of the loop takes 5 s
    monkeypatch.setattr(_logging.time, "monotonic", lambda: next(clock))
    with caplog.at_level(logging.INFO, logger="embedensemble.progress"):
        assert list(progress(range(100), desc="Batches")) == list(range(100))
    lines = [r.getMessage() for r in caplog.records if r.name == "embedensemble.progress"]
    # 100 steps x 5 s = 500 s: one line per 30 s (16), plus the closing line; never one per step
    assert len(lines) == 17
    assert lines[0] == "Batches: 6/100 (30 s)" and lines[-1] == "Batches: 100 done (500 s)"


def test_a_short_loop_logs_nothing_and_warning_level_is_silent(monkeypatch, caplog, info_level):
    monkeypatch.setattr("sys.stderr", FakeStderr(terminal=False))
    with caplog.at_level(logging.INFO, logger="embedensemble.progress"):
        assert list(progress(range(50), desc="fold")) == list(range(50))
    assert not [r for r in caplog.records if r.name == "embedensemble.progress"]
    logging.getLogger("embedensemble").setLevel(logging.WARNING)
    items = [1, 2]
    assert progress(items, desc="x") is items


def test_root_logging_kept_undoes_what_a_block_adds_to_the_root_logger():
    import logging

    from embedensemble._logging import root_logging_kept

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    with root_logging_kept():
        root.addHandler(logging.StreamHandler())  # what logging.info() does to a root logger without handlers
        root.setLevel(logging.DEBUG)
    assert root.handlers == handlers and root.level == level
