import pytest
import torch as th


@pytest.fixture
def one_torch_thread():
    """One intra-op thread: tiny networks gain nothing from more on a 2-core machine, and bitwise-identical
    results (exact resume) need the same reduction order every time."""
    threads = th.get_num_threads()
    th.set_num_threads(1)
    yield
    th.set_num_threads(threads)
