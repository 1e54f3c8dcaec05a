"""Fixtures shared by several test modules."""

import pytest


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module's tests: tiny models spend more time in thread hand-offs than in
    arithmetic, one thread is immune to other processes competing for the cores, and float reductions
    then match across processes (Ray tasks, DDP ranks) that run one thread each."""
    from embedensemble.backbones import torch_threads

    with torch_threads(1):
        yield
