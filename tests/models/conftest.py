import pytest
import torch


@pytest.fixture
def one_thread():
    """One intra-op thread while a test runs: with tiny tensors on the shared 2-core CI machine, thread
    hand-offs cost more than they save (two threads made HA-GAN's toy steps ~10x slower)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
