import os

import numpy as np
import pytest

import fastemb
from fastemb import _backend


native_isas = _backend.native_isas  # kept for old imports; use fastemb._backend.native_isas


@pytest.fixture
def rng(request):
    # Fresh random inputs each run; the seed is printed on failure to reproduce it.
    seed = int.from_bytes(os.urandom(4), "little")
    request.node.user_properties.append(("seed", seed))
    print(f"rng seed {seed}")
    return np.random.default_rng(seed)


def pytest_report_header(config):
    info = fastemb.info()
    return f"fastemb {info['version']} backend={info['backend']} isa={info['isa']} threads={info['num_threads']} cuda_module={info['cuda_module']} cuda_devices={info['cuda_devices']}"
