"""torch.ops.fastemb.binarize / hamming / sdc_scores / sdc_topk: exact equality with the NumPy
API, opcheck, torch.compile(fullgraph=True), bad inputs, and CUDA against CPU."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
import fastemb  # noqa: E402
import fastemb.torch as ft  # noqa: E402
from fastemb._reference import binary as ref  # noqa: E402

INT32_MIN = -2 ** 31
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def cuda_binary_available():
    mod = fastemb._backend.cuda_module()
    return mod is not None and hasattr(mod, "binary_topk") and hasattr(mod, "binary_scores")


def rand_codes(rng, n, bits, dim):
    """Random codes with zero padding bits (like binarize / pack_levels produce)."""
    return ref.pack_levels(rng.integers(0, 2, size=(n, bits, dim)).astype(bool))


# ---- binarize --------------------------------------------------------------------------------

@pytest.mark.parametrize("bits", [1, 2, 3, 4])
@pytest.mark.parametrize("m", [1, 7, 8, 13, 64, 100, 129, 300, 1030])
def test_binarize_bit_exact(rng, bits, m):
    x = rng.standard_normal((37, m)) * np.exp(rng.standard_normal((37, 1)))
    x[0] = 0.0  # all-zero row
    x[1, : m // 2] = 0.0  # exact zeros: sign(0) = +1
    for dtype in (np.float64, np.float32):
        xd = x.astype(dtype)
        got = ft.binarize(torch.from_numpy(xd), bits)
        assert got.dtype == torch.uint8 and got.shape == (37, bits, (m + 7) // 8)
        np.testing.assert_array_equal(got.numpy(), fastemb.binarize(xd, bits))


def test_binarize_ties_on_level_boundaries(rng):
    # x/s lands exactly on the dyadic thresholds (0, +-1, +-0.5, ...): the scale must be the same
    # double NumPy computes, or the bits flip
    m = 200
    x = rng.choice([-1.5, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5, 0.75, -0.25], size=(50, m)) * 3.0
    x += rng.choice([0.0, 1e-12], size=x.shape)
    for bits in (1, 2, 3, 4):
        np.testing.assert_array_equal(ft.binarize(torch.from_numpy(x), bits).numpy(), fastemb.binarize(x, bits))


def test_binarize_half_dtypes_and_scale(rng):
    x = torch.from_numpy(rng.standard_normal((20, 33)).astype(np.float32))
    for dtype in (torch.float16, torch.bfloat16):
        xh = x.to(dtype)
        np.testing.assert_array_equal(ft.binarize(xh, 3).numpy(), fastemb.binarize(xh.double().numpy(), 3))
    scale = rng.uniform(0.5, 2.0, 20)
    np.testing.assert_array_equal(ft.binarize(x, 2, torch.from_numpy(scale)).numpy(),
                                  fastemb.binarize(x.numpy(), 2, scale))
    np.testing.assert_array_equal(ft.binarize(x, 4, 0.3).numpy(), fastemb.binarize(x.numpy(), 4, 0.3))


# ---- scores and top-k against the NumPy API ------------------------------------------------------

@pytest.mark.parametrize("bits", [1, 2, 3, 4])
@pytest.mark.parametrize("dim", [8, 61, 256])
def test_scores_match_numpy(rng, bits, dim):
    q = rand_codes(rng, 9, bits, dim)
    d = rand_codes(rng, 130, bits, dim)
    tq, td = torch.from_numpy(q), torch.from_numpy(d)
    for fn, tfn in [(fastemb.hamming, ft.hamming), (fastemb.sdc_scores, ft.sdc_scores)]:
        got = tfn(tq, td, dim=dim)
        assert got.dtype == torch.int32
        np.testing.assert_array_equal(got.numpy(), fn(q, d, dim=dim))
    got = ft.sdc_scores(tq, td)  # default dim = 8 * nbytes
    np.testing.assert_array_equal(got.numpy(), fastemb.sdc_scores(q, d))


@pytest.mark.parametrize("bits", [1, 2, 4])
@pytest.mark.parametrize("k", [1, 5, 130, 200])
def test_topk_matches_numpy(rng, bits, k):
    dim = 45
    q = rand_codes(rng, 7, bits, dim)
    d = rand_codes(rng, 130, bits, dim)
    d[60:70] = d[0]  # ties: lower id first
    s, i = ft.sdc_topk(torch.from_numpy(q), torch.from_numpy(d), k, dim=dim)
    assert s.dtype == torch.int32 and i.dtype == torch.int64 and s.shape == (7, k)
    es, ei = fastemb.sdc_topk(q, d, k, dim=dim)
    np.testing.assert_array_equal(s.numpy(), es)
    np.testing.assert_array_equal(i.numpy(), ei)


def test_two_dim_one_bit_codes_and_empty(rng):
    q = rand_codes(rng, 4, 1, 40)[:, 0]
    d = rand_codes(rng, 20, 1, 40)[:, 0]
    np.testing.assert_array_equal(ft.hamming(torch.from_numpy(q), torch.from_numpy(d)).numpy(), fastemb.hamming(q, d))
    s, i = ft.sdc_topk(torch.from_numpy(q), torch.from_numpy(d[:0]), 3)
    assert (s == INT32_MIN).all() and (i == -1).all() and s.shape == (4, 3)
    assert ft.sdc_scores(torch.from_numpy(q[:0]), torch.from_numpy(d)).shape == (0, 20)


def _with_zeros(rng, x):
    x = x.copy()
    mask = rng.random(x.shape) < 0.15
    x[mask] = np.where(rng.random(int(mask.sum())) < 0.5, 0.0, -0.0)
    return x


@pytest.mark.parametrize("rule", ["ge", "gt"])
@pytest.mark.parametrize("bits", [1, 2, 3, 4])
def test_binarize_threshold_rule_bit_exact(rng, rule, bits):
    for n, m in ((1, 1), (1, 9), (23, 45), (17, 384)):
        x = _with_zeros(rng, rng.standard_normal((n, m)) * np.exp(rng.standard_normal((n, 1))))
        x[0, :2] = 0.0
        if n > 2:
            x[2] = 0.0
        for dtype in (torch.float64, torch.float32, torch.float16, torch.bfloat16):
            xt = torch.from_numpy(x).to(dtype)
            got = ft.binarize(xt, bits, threshold_rule=rule).numpy()
            np.testing.assert_array_equal(got, fastemb.binarize(xt.double().numpy(), bits, threshold_rule=rule),
                                          err_msg=f"{dtype} {n}x{m}")
            want0 = (xt > 0) if rule == "gt" else (xt >= 0)
            np.testing.assert_array_equal(got[:, 0], np.packbits(want0.numpy(), axis=-1))
    # values on the level boundaries (ties) and a given scale
    x = rng.choice(np.arange(-16, 17) / 8.0, size=(30, 70))
    for scale in (1.0, 0.5):
        np.testing.assert_array_equal(ft.binarize(torch.from_numpy(x), bits, scale, threshold_rule=rule).numpy(),
                                      fastemb.binarize(x, bits, scale, threshold_rule=rule))
    x = np.array([[5e-324, -5e-324, 10.0, 0.0, -0.0]])  # x / s underflows: plane 0 follows x
    np.testing.assert_array_equal(ft.binarize(torch.from_numpy(x), bits, threshold_rule=rule).numpy(),
                                  fastemb.binarize(x, bits, threshold_rule=rule))


def test_non_contiguous_inputs(rng):
    d = rand_codes(rng, 40, 2, 64)
    td = torch.from_numpy(d)[::2]
    q = td[:3]
    np.testing.assert_array_equal(ft.sdc_scores(q, td).numpy(), fastemb.sdc_scores(d[::2][:3], d[::2]))


# ---- opcheck and torch.compile ---------------------------------------------------------------------

def test_opcheck(rng):
    x = torch.from_numpy(rng.standard_normal((11, 37)).astype(np.float32))
    torch.library.opcheck(torch.ops.fastemb.binarize.default, (x, 3, None))
    torch.library.opcheck(torch.ops.fastemb.binarize.default, (x, 2, None, "gt"))
    torch.library.opcheck(torch.ops.fastemb.binarize.default, (x, 2, torch.rand(11, dtype=torch.float64) + 0.5))
    q = torch.from_numpy(rand_codes(rng, 5, 2, 37))
    d = torch.from_numpy(rand_codes(rng, 23, 2, 37))
    torch.library.opcheck(torch.ops.fastemb.hamming.default, (q, d, 37))
    torch.library.opcheck(torch.ops.fastemb.sdc_scores.default, (q, d, 37))
    torch.library.opcheck(torch.ops.fastemb.sdc_topk.default, (q, d, 4, 37))
    torch.library.opcheck(torch.ops.fastemb.sdc_topk.default, (q, d, 30, 37))


def test_torch_compile_fullgraph(rng):
    def search(xq, d):
        q = ft.binarize(xq, 2)
        s, i = ft.sdc_topk(q, d, 5)
        h = ft.hamming(q, d)
        u = ft.hamming(ft.binarize(xq, 1, threshold_rule="gt"), d[:, :1])
        return s, i, h.sum(dim=1), u

    compiled = torch.compile(search, fullgraph=True, backend="aot_eager")
    xq = torch.from_numpy(rng.standard_normal((6, 64)).astype(np.float32))
    d = ft.binarize(torch.from_numpy(rng.standard_normal((90, 64)).astype(np.float32)), 2)
    for got, want in zip(compiled(xq, d), search(xq, d)):
        torch.testing.assert_close(got, want, rtol=0, atol=0)


# ---- bad inputs ------------------------------------------------------------------------------------

def test_bad_inputs(rng):
    q = torch.from_numpy(rand_codes(rng, 3, 2, 30))
    d = torch.from_numpy(rand_codes(rng, 10, 2, 30))
    with pytest.raises(TypeError, match="uint8"):
        ft.sdc_scores(q.int(), d)
    with pytest.raises(TypeError, match="torch.Tensor"):
        ft.hamming(q.numpy(), d)
    with pytest.raises(ValueError, match="bits"):
        ft.sdc_scores(q, d[:, :1])
    with pytest.raises(ValueError, match="nbytes"):
        ft.sdc_scores(q, d[:, :, :3])
    with pytest.raises(ValueError, match="bits"):
        ft.sdc_topk(q[0], d, 3)  # 2-D: read as 1-bit codes
    with pytest.raises(ValueError, match="shape"):
        ft.sdc_topk(q[0, 0], d, 3)
    with pytest.raises(ValueError, match="dim"):
        ft.sdc_scores(q, d, dim=40)
    with pytest.raises(ValueError, match="dim"):
        ft.hamming(q, d, dim=24)
    with pytest.raises(ValueError, match="k must be >= 1"):
        ft.sdc_topk(q, d, 0)
    with pytest.raises(TypeError, match="k"):
        ft.sdc_topk(q, d, 2.0)
    with pytest.raises(ValueError, match="bits"):
        ft.sdc_scores(torch.zeros(2, 5, 3, dtype=torch.uint8), torch.zeros(2, 5, 3, dtype=torch.uint8))
    with pytest.raises(ValueError, match="overflow"):
        big = torch.zeros(1, 4, 2 ** 21, dtype=torch.uint8)
        ft.sdc_scores(big, big)
    x = torch.randn(4, 10)
    with pytest.raises(TypeError, match="float"):
        ft.binarize(x.long(), 1)
    with pytest.raises(ValueError, match="2-D"):
        ft.binarize(x[0], 1)
    with pytest.raises(ValueError, match="bits"):
        ft.binarize(x, 5)
    with pytest.raises(ValueError, match="finite"):
        ft.binarize(torch.tensor([[1.0, float("nan")]]), 1)
    with pytest.raises(ValueError, match="scale"):
        ft.binarize(x, 1, -1.0)
    with pytest.raises(ValueError, match="scale"):
        ft.binarize(x, 1, torch.ones(3))
    for bad in (1, None, b"gt"):
        with pytest.raises(TypeError, match="threshold_rule"):
            ft.binarize(x, 1, threshold_rule=bad)
    for bad in ("GT", "ubinary", ""):
        with pytest.raises(ValueError, match="threshold_rule"):
            ft.binarize(x, 1, threshold_rule=bad)
        with pytest.raises(ValueError, match="threshold_rule"):
            torch.ops.fastemb.binarize(x, 1, None, bad)  # the op checks too
    if torch.cuda.is_available():
        with pytest.raises(ValueError, match="device"):
            ft.sdc_scores(q, d.cuda())


# ---- CUDA against CPU ------------------------------------------------------------------------------

@pytest.mark.cuda
@cuda
@pytest.mark.parametrize("bits", [1, 2, 3, 4])
@pytest.mark.parametrize("dim", [8, 77, 256, 1024])
def test_cuda_scores_match_cpu(rng, bits, dim):
    if not cuda_binary_available():
        pytest.skip("fastemb._C_cuda has no binary kernels in this build")
    q = torch.from_numpy(rand_codes(rng, 33, bits, dim))
    d = torch.from_numpy(rand_codes(rng, 1000, bits, dim))
    for fn in (ft.hamming, ft.sdc_scores):
        got = fn(q.cuda(), d.cuda(), dim=dim)
        assert got.is_cuda and got.dtype == torch.int32
        torch.testing.assert_close(got.cpu(), fn(q, d, dim=dim), rtol=0, atol=0)


@pytest.mark.cuda
@cuda
@pytest.mark.parametrize("bits", [1, 2, 4])
@pytest.mark.parametrize("k", [1, 10, 100, 1024])
def test_cuda_topk_matches_cpu(rng, bits, k):
    if not cuda_binary_available():
        pytest.skip("fastemb._C_cuda has no binary kernels in this build")
    dim = 200
    q = torch.from_numpy(rand_codes(rng, 17, bits, dim))
    d = torch.from_numpy(rand_codes(rng, 2500, bits, dim))
    d[1000:1100] = d[5]  # many ties: lower id first on both devices
    s, i = ft.sdc_topk(q.cuda(), d.cuda(), k, dim=dim)
    assert s.is_cuda and s.dtype == torch.int32 and i.dtype == torch.int64 and s.shape == (17, k)
    es, ei = ft.sdc_topk(q, d, k, dim=dim)
    torch.testing.assert_close(s.cpu(), es, rtol=0, atol=0)
    torch.testing.assert_close(i.cpu(), ei, rtol=0, atol=0)


def rand_code_bytes(rng, n, bits, dim):
    """Random codes for dim % 8 == 0 (no padding bits), drawn as bytes: cheap for millions of rows."""
    assert dim % 8 == 0
    return rng.integers(0, 256, size=(n, bits, dim // 8), dtype=np.uint8)


def assert_cuda_topk_equals_cpu(q, d, k, dim):
    s, i = ft.sdc_topk(q.cuda(), d.cuda(), k, dim=dim)
    assert s.is_cuda and s.dtype == torch.int32 and i.dtype == torch.int64 and s.shape == (q.shape[0], k)
    es, ei = ft.sdc_topk(q, d, k, dim=dim)
    torch.testing.assert_close(s.cpu(), es, rtol=0, atol=0)
    torch.testing.assert_close(i.cpu(), ei, rtol=0, atol=0)
    return es, ei


@pytest.mark.cuda
@cuda
@pytest.mark.parametrize("bits", [1, 2])
@pytest.mark.parametrize("nq", [1, 3])
@pytest.mark.parametrize("k", [1, 10, 1000, 20000])
def test_cuda_topk_few_queries_many_ties(rng, bits, nq, k):
    # Few queries: the select is split over many blocks per query (segments, then a merge). 64-bit
    # codes give only ~30-100 distinct scores over 200k docs, so the k-th score is tied across
    # segment boundaries; 3000 copies of query 0 spread over the corpus all tie at its best score,
    # so (bits = 1) its top-k must be the lowest of their ids. k = 20000 stages the sort in global memory.
    if not cuda_binary_available():
        pytest.skip("fastemb._C_cuda has no binary kernels in this build")
    dim, nd = 64, 200_000
    q = rand_code_bytes(rng, nq, bits, dim)
    d = rand_code_bytes(rng, nd, bits, dim)
    copies = np.sort(rng.choice(nd, size=3000, replace=False))
    d[copies] = q[0]
    es, ei = assert_cuda_topk_equals_cpu(torch.from_numpy(q), torch.from_numpy(d), k, dim)
    if bits == 1:  # dim - 2 * hamming: an exact copy has the highest score
        np.testing.assert_array_equal(ei[0, : min(k, 3000)].numpy(), copies[: min(k, 3000)])


@pytest.mark.cuda
@cuda
@pytest.mark.parametrize("k", [10, 1000])
def test_cuda_topk_few_queries_several_doc_chunks(rng, k):
    # 8 queries x 4.5M docs: two doc chunks (2^25 / 8 docs, then the rest), each split over
    # segments, so the merge also carries the running list of the first chunk.
    if not cuda_binary_available():
        pytest.skip("fastemb._C_cuda has no binary kernels in this build")
    dim, nd = 64, 4_500_000
    q = rand_code_bytes(rng, 8, 1, dim)
    d = rand_code_bytes(rng, nd, 1, dim)
    d[[5, 4_194_303, 4_194_304, 4_499_999]] = q[3]  # best-score ties on both sides of the chunk edge
    es, ei = assert_cuda_topk_equals_cpu(torch.from_numpy(q), torch.from_numpy(d), k, dim)
    np.testing.assert_array_equal(ei[3, :4].numpy(), [5, 4_194_303, 4_194_304, 4_499_999])


@pytest.mark.cuda
@cuda
@pytest.mark.parametrize("nq", [1, 3])
@pytest.mark.parametrize("nd", [1, 2500, 70_000])
def test_cuda_topk_k_above_nd_padded(rng, nq, nd):
    if not cuda_binary_available():
        pytest.skip("fastemb._C_cuda has no binary kernels in this build")
    dim, k = 64, nd + 777
    q = torch.from_numpy(rand_code_bytes(rng, nq, 2, dim))
    d = torch.from_numpy(rand_code_bytes(rng, nd, 2, dim))
    es, ei = assert_cuda_topk_equals_cpu(q, d, k, dim)
    assert (ei[:, nd:] == -1).all().item() and (es[:, nd:] == INT32_MIN).all().item()
    assert (ei[:, :nd] >= 0).all().item()


@pytest.mark.cuda
@cuda
@pytest.mark.parametrize("rule", ["ge", "gt"])
@pytest.mark.parametrize("bits", [1, 2, 3, 4])
def test_cuda_binarize_matches_cpu(rng, bits, rule):
    x = torch.from_numpy(_with_zeros(rng, rng.standard_normal((64, 300))))
    x[0] = 0.0
    for dtype in (torch.float32, torch.float64, torch.bfloat16):
        xd = x.to(dtype)
        got = ft.binarize(xd.cuda(), bits, threshold_rule=rule)
        assert got.is_cuda and got.dtype == torch.uint8
        torch.testing.assert_close(got.cpu(), ft.binarize(xd, bits, threshold_rule=rule), rtol=0, atol=0)


@pytest.mark.cuda
@cuda
def test_cuda_compile_and_empty(rng):
    if not cuda_binary_available():
        pytest.skip("fastemb._C_cuda has no binary kernels in this build")
    q = torch.from_numpy(rand_codes(rng, 4, 2, 64)).cuda()
    d = torch.from_numpy(rand_codes(rng, 50, 2, 64)).cuda()
    fn = torch.compile(lambda q, d: ft.sdc_topk(q, d, 7), fullgraph=True, backend="aot_eager")
    s, i = fn(q, d)
    es, ei = ft.sdc_topk(q.cpu(), d.cpu(), 7)
    torch.testing.assert_close(s.cpu(), es, rtol=0, atol=0)
    torch.testing.assert_close(i.cpu(), ei, rtol=0, atol=0)
    s, i = ft.sdc_topk(q, d[:0], 3)
    assert (s == INT32_MIN).all().item() and (i == -1).all().item()
    s, i = ft.sdc_topk(q, d, 64)  # k > nd: padded
    es, ei = ft.sdc_topk(q.cpu(), d.cpu(), 64)
    torch.testing.assert_close(s.cpu(), es, rtol=0, atol=0)
    torch.testing.assert_close(i.cpu(), ei, rtol=0, atol=0)
    assert (i[:, 50:] == -1).all().item()
