"""Error messages a first-time user meets: code arrays whose shapes disagree (one query given
without its row axis, the classic ``codes[0]``), for the NumPy and the torch API."""
import numpy as np
import pytest

import fastemb


@pytest.fixture
def two_bit_codes():
    return fastemb.binarize(np.random.default_rng(0).standard_normal((6, 100)).astype(np.float32), bits=2)


def _apis():
    yield "numpy", lambda a: a, fastemb
    try:
        import torch

        import fastemb.torch as ft
    except ImportError:
        return
    yield "torch", torch.from_numpy, ft


@pytest.mark.parametrize("api", ["numpy", "torch"])
def test_one_query_without_row_axis_explains_the_shapes(two_bit_codes, api):
    apis = {name: (conv, mod) for name, conv, mod in _apis()}
    if api not in apis:
        pytest.skip("torch is not installed")
    conv, mod = apis[api]
    c = two_bit_codes  # [6, 2, 13]
    for call in (lambda q, d: mod.sdc_topk(q, d, 3), mod.sdc_scores, mod.hamming):
        with pytest.raises(ValueError) as err:
            call(conv(c[0]), conv(c))
        msg = str(err.value)
        assert "q has shape (2, 13), read as [nq=2, nbytes=13] (1 bit)" in msg
        assert "d has shape (6, 2, 13): [nd=6, bits=2, nbytes=13]" in msg
        assert "q [nq, bits, nbytes]" in msg and "d [nd, bits, nbytes]" in msg
        assert "q[None]" in msg and "(1, 2, 13)" in msg
        # the corpus given as one row: the hint names d
        with pytest.raises(ValueError, match=r"d looks like a single row.*d\[None\]"):
            call(conv(c), conv(c[0]))
    # the fix the message suggests works
    s, i = mod.sdc_topk(conv(c[0][None]), conv(c), 3)
    assert int(i[0, 0]) == 0


def test_nbytes_mismatch_shows_both_shapes(two_bit_codes):
    c = two_bit_codes
    with pytest.raises(ValueError, match=r"disagree on nbytes: q has shape \(6, 2, 13\).*d has shape \(6, 2, 12\)"):
        fastemb.sdc_scores(c, np.ascontiguousarray(c[:, :, :12]))
