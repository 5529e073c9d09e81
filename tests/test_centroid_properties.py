"""Property tests (hypothesis) for fastemb.centroid_aggregate.

Random shapes (n 0..60, d 0..20, k 0..8 unless noted), every reduce/normalize/leave_one_out
combination, random weights; the float64 NumPy reference is the oracle. Runs on both backends
(native and FASTEMB_BACKEND=numpy); the ISA test needs the native module.
"""
import itertools

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import fastemb
from fastemb import _backend
from fastemb._reference import centroid as ref
from fastemb.centroid import native_backward, native_forward

from fastemb._backend import native_isas

REDUCES = ["sum", "mean", "amax", "amin"]
NORMALIZES = ["none", "pre", "post", "both"]
MODES = [(r, nz, loo) for r, nz, loo in itertools.product(REDUCES, NORMALIZES, [False, True])
         if not (loo and r in ("amax", "amin"))]
FLOATS = [np.float32, np.float64]

SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def agg(x, *args, **kw):
    return fastemb.centroid_aggregate(x, *args, **kw)


# ---- strategies ----------------------------------------------------------------------------------

@st.composite
def problems(draw, max_n=60, max_d=20, max_k=8, dtypes=FLOATS, data_kinds=("normal", "ints", "special")):
    """(x, labels, k, rng): x [n, d] of a drawn dtype, labels in [0, k), some groups possibly empty."""
    n = draw(st.integers(0, max_n))
    d = draw(st.integers(0, max_d))
    k = draw(st.integers(1 if n else 0, max_k))
    dtype = draw(st.sampled_from(dtypes))
    kind = draw(st.sampled_from(data_kinds))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    used = draw(st.integers(1, k)) if k else 0  # labels drawn from a random subset of the groups
    groups = rng.choice(k, size=used, replace=False) if k else np.zeros(0, np.int64)
    labels = rng.choice(groups, size=n) if n else np.zeros(0, np.int64)
    x = make_x(rng, n, d, kind).astype(dtype)
    return x, labels.astype(np.int64), k, rng


def make_x(rng, n, d, kind):
    if kind == "normal":
        return rng.standard_normal((n, d))
    if kind == "ints":  # many ties and exact sums
        return rng.integers(-3, 4, size=(n, d)).astype(np.float64)
    # "special": signed zeros, tiny and moderately large values, repeated values
    pool = np.array([0.0, -0.0, 1.0, -1.0, 0.5, 3.25, -7.0, 1e-30, -1e-30, 1e3, -2.5e2, 1e-3])
    return rng.choice(pool, size=(n, d)) * rng.choice([1.0, 1.0, -1.0], size=(n, d))


def make_weights(rng, n, kind):
    """None, or finite non-negative weights (0 or in [0.5, 2]) so that mean denominators are either
    exactly 0 (every other weight of the group is 0) or well away from 0."""
    if kind == "none":
        return None
    if kind == "ones":
        return np.ones(n)
    if kind == "int":
        return rng.integers(0, 4, size=n).astype(np.float64)
    w = rng.uniform(0.5, 2.0, size=n)
    w[rng.random(n) < 0.2] = 0.0
    return w


weight_kinds = st.sampled_from(["none", "none", "ones", "int", "uniform"])


def offsets_of(labels, k):
    return np.concatenate([[0], np.cumsum(np.bincount(labels, minlength=k))]).astype(np.int64)


# ---- oracle and tolerance ------------------------------------------------------------------------

def reference(x, labels, k, w, reduce, normalize, loo, eps=1e-12):
    out, counts, *_ = ref.forward(x.astype(np.float64), labels, None, k, w, reduce, normalize, eps, loo)
    return out, counts


def magnitude(x64, labels, k, w, reduce, normalize, loo):
    """Per output row, a scale of the values whose rounding errors reach it: the group sum of
    |w_i x_i| (after 'pre'), divided by the mean's denominator; the group max |x| for amax/amin."""
    n, d = x64.shape
    xa = np.abs(x64)
    if normalize in ("pre", "both"):
        xa = xa / np.maximum(np.sqrt((x64 * x64).sum(1)), 1e-12)[:, None]
    ww = np.ones(n) if w is None else np.abs(w)
    if reduce in ("amax", "amin"):
        m = np.zeros((k, d))
        np.maximum.at(m, labels, xa)
        return m.max(axis=1) if d else np.zeros(k)
    s = np.zeros((k, d))
    np.add.at(s, labels, ww[:, None] * xa)
    s = s.max(axis=1) if d else np.zeros(k)
    if not loo:
        if reduce == "mean":
            wsum = np.bincount(labels, weights=ww, minlength=k)
            s = np.where(wsum > 0, s / np.where(wsum > 0, wsum, 1), 0)
        return s
    s = s[labels]
    if reduce == "mean":
        wsum = np.bincount(labels, weights=ww, minlength=k)[labels] - ww
        s = np.where(wsum > 1e-9, s / np.where(wsum > 1e-9, wsum, 1), 0)
    return s


def check_against_reference(got, x, labels, k, w, reduce, normalize, loo):
    """Compares with the float64 reference; rows made ill-conditioned by 'post' (a centroid that
    nearly cancels) are only checked for finiteness and norm <= 1."""
    tol = {np.float32: 1e-4, np.float64: 1e-9}[x.dtype.type]
    x64 = x.astype(np.float64)
    expected, _ = reference(x, labels, k, w, reduce, normalize, loo)
    mag = magnitude(x64, labels, k, w, reduce, normalize, loo)
    assert got.shape == expected.shape and got.dtype == x.dtype
    assert np.all(np.isfinite(got))
    g = got.astype(np.float64)
    if normalize in ("post", "both"):
        raw, _ = reference(x, labels, k, w, reduce, "pre" if normalize == "both" else "none", loo)
        raw_norm = np.sqrt((raw * raw).sum(1)) if raw.shape[1] else np.zeros(raw.shape[0])
        # relative error of the un-normalized centroid, amplified by 1/||c|| by the normalization
        # (a centroid that cancels to exactly 0 in float64 but not in the kernel's rounding is
        # normalized to an arbitrary direction: ratio inf, not compared)
        ratio = np.where(raw_norm > 0, mag / np.where(raw_norm > 0, raw_norm, 1), np.where(mag > 0, np.inf, 0))
        good = ratio < 100
        err_scale = np.maximum(ratio, 1.0)
        norms = np.sqrt((g * g).sum(1)) if g.shape[1] else np.zeros(g.shape[0])
        assert np.all(norms <= 1 + 10 * tol)
        bound = tol * (1 + np.abs(expected)) * err_scale[:, None] * 10
        diff = np.abs(g - expected)
        bad = (diff > bound) & good[:, None]
        assert not bad.any(), (f"{reduce} {normalize} loo={loo}: max err {diff[bad].max()} at "
                               f"{np.argwhere(bad)[:3].tolist()}")
    else:
        bound = tol * (np.abs(expected) + mag[:, None] + 1e-300) * 10
        diff = np.abs(g - expected)
        assert np.all(diff <= bound), (f"{reduce} {normalize} loo={loo}: max err {diff.max()} "
                                       f"at {np.unravel_index(np.argmax(diff - bound), diff.shape)}")


# ---- properties ----------------------------------------------------------------------------------

@settings(max_examples=100, **SETTINGS)
@given(problems(data_kinds=("normal", "ints")), st.sampled_from(MODES), weight_kinds,
       st.sampled_from([np.int32, np.int64]), st.booleans())
def test_matches_float64_reference(problem, mode, wkind, label_dtype, sort):
    x, labels, k, rng = problem
    reduce, normalize, loo = mode
    if sort:
        order = np.argsort(labels, kind="stable")
        x, labels = x[order], labels[order]
    w = make_weights(rng, len(labels), wkind) if reduce in ("sum", "mean") else None
    got, counts = agg(x, labels.astype(label_dtype), num_groups=k, weights=w, reduce=reduce, normalize=normalize,
                      leave_one_out=loo, return_counts=True)
    # the oracle sees the weights as the kernels do: in x's accumulation dtype
    w_acc = None if w is None else w.astype(ref.acc_dtype(x.dtype)).astype(np.float64)
    check_against_reference(got, x, labels, k, w_acc, reduce, normalize, loo)
    np.testing.assert_array_equal(counts, np.bincount(labels, minlength=k))
    assert counts.dtype == np.int64


@settings(max_examples=60, **SETTINGS)
@given(problems(data_kinds=("normal", "ints")), weight_kinds)
def test_group_sums_add_up_to_the_column_sum(problem, wkind):
    x, labels, k, rng = problem
    w = make_weights(rng, len(labels), wkind)
    out = agg(x, labels, num_groups=k, reduce="sum", weights=w)
    x64 = x.astype(np.float64)
    ww = np.ones(len(labels)) if w is None else w
    total = (ww[:, None] * x64).sum(0)
    tol = 1e-4 if x.dtype == np.float32 else 1e-10
    scale = (np.abs(ww[:, None] * x64)).sum(0) + 1
    assert np.all(np.abs(out.astype(np.float64).sum(0) - total) <= tol * scale)


@settings(max_examples=60, **SETTINGS)
@given(st.integers(1, 60), st.integers(0, 20), st.sampled_from(FLOATS), st.integers(0, 2**32 - 1),
       st.sampled_from(["normal", "ints", "special"]))
def test_single_group_mean_is_column_mean(n, d, dtype, seed, kind):
    rng = np.random.default_rng(seed)
    x = make_x(rng, n, d, kind).astype(dtype)
    labels = np.zeros(n, dtype=np.int64)
    out = agg(x, labels)  # num_groups defaults to max + 1 = 1
    assert out.shape == (1, d) and out.dtype == dtype
    expected = x.astype(np.float64).mean(0)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    scale = np.abs(x.astype(np.float64)).mean(0) + 1e-300
    assert np.all(np.abs(out[0] - expected) <= tol * scale)
    # offsets form, one group
    np.testing.assert_array_equal(agg(x, offsets=np.array([0, n])), out)


@settings(max_examples=80, **SETTINGS)
@given(problems(data_kinds=("normal", "ints", "special")), st.sampled_from(MODES), st.integers(0, 2**32 - 1),
       weight_kinds)
def test_row_permutation_changes_groups_only_by_rounding(problem, mode, seed, wkind):
    x, labels, k, rng = problem
    reduce, normalize, loo = mode
    w = make_weights(rng, len(labels), wkind) if reduce in ("sum", "mean") else None
    perm = np.random.default_rng(seed).permutation(len(labels))
    kw = dict(num_groups=k, reduce=reduce, normalize=normalize, leave_one_out=loo, return_counts=True)
    a, ca = agg(x, labels, weights=w, **kw)
    b, cb = agg(x[perm], labels[perm], weights=None if w is None else w[perm], **kw)
    np.testing.assert_array_equal(ca, cb)
    if loo:
        b_back = np.empty_like(b)
        b_back[perm] = b  # row outputs follow their rows
        b = b_back
    if reduce in ("amax", "amin"):
        # max/min are exact: the same values whatever the order (-0.0 == 0.0 here)
        np.testing.assert_array_equal(a, b)
    else:
        tol = 1e-4 if x.dtype == np.float32 else 1e-10
        mag = magnitude(x.astype(np.float64), labels, k, w, reduce, normalize, loo)
        if normalize in ("post", "both"):
            raw = agg(x, labels, weights=w, num_groups=k, reduce=reduce, leave_one_out=loo,
                      normalize="pre" if normalize == "both" else "none").astype(np.float64)
            rn = np.sqrt((raw * raw).sum(1)) if raw.shape[1] else np.zeros(raw.shape[0])
            ok = rn > 1e-2 * mag
            np.testing.assert_allclose(a[ok], b[ok], rtol=10 * tol, atol=10 * tol)
        else:
            assert np.all(np.abs(a.astype(np.float64) - b) <= 10 * tol * (mag[:, None] + np.abs(a) + 1e-300))


@settings(max_examples=80, **SETTINGS)
@given(problems(dtypes=[np.float16, np.float32, np.float64], data_kinds=("normal", "ints", "special")),
       st.booleans(), st.booleans())
def test_amax_amin_bound_every_member_and_are_attained(problem, use_offsets, sort):
    x, labels, k, _ = problem
    if sort or use_offsets:
        order = np.argsort(labels, kind="stable")
        x, labels = x[order], labels[order]
    src = dict(offsets=offsets_of(labels, k)) if use_offsets else dict(index=labels, num_groups=k)
    hi = agg(x, reduce="amax", **src)
    lo = agg(x, reduce="amin", **src)
    assert hi.dtype == lo.dtype == x.dtype
    for g in range(k):
        members = x[labels == g]
        if len(members) == 0:
            continue
        assert np.all(members <= hi[g]) and np.all(members >= lo[g])
        assert np.all((members == hi[g]).any(axis=0))  # every column's max is one member's value
        assert np.all((members == lo[g]).any(axis=0))
        np.testing.assert_array_equal(hi[g], members.max(axis=0))
        np.testing.assert_array_equal(lo[g], members.min(axis=0))
    assert np.all(lo <= hi)


@settings(max_examples=60, **SETTINGS)
@given(problems(dtypes=[np.float16, np.float32, np.float64]), st.sampled_from(MODES), st.booleans())
def test_counts_equal_bincount(problem, mode, use_offsets):
    x, labels, k, _ = problem
    reduce, normalize, loo = mode
    if use_offsets:
        labels = np.sort(labels)
    src = dict(offsets=offsets_of(labels, k)) if use_offsets else dict(index=labels, num_groups=k)
    _, counts = agg(x, reduce=reduce, normalize=normalize, leave_one_out=loo, return_counts=True, **src)
    assert counts.dtype == np.int64 and counts.shape == (k,)
    np.testing.assert_array_equal(counts, np.bincount(labels, minlength=k))


@settings(max_examples=80, **SETTINGS)
@given(problems(dtypes=[np.float16, np.float32, np.float64], data_kinds=("normal", "ints", "special")),
       st.sampled_from(MODES), weight_kinds, st.booleans())
def test_empty_groups_and_singleton_leave_one_out_are_exactly_zero(problem, mode, wkind, use_offsets):
    x, labels, k, rng = problem
    reduce, normalize, loo = mode
    if use_offsets:
        order = np.argsort(labels, kind="stable")
        x, labels = x[order], labels[order]
    w = make_weights(rng, len(labels), wkind) if reduce in ("sum", "mean") else None
    src = dict(offsets=offsets_of(labels, k)) if use_offsets else dict(index=labels, num_groups=k)
    out, counts = agg(x, weights=w, reduce=reduce, normalize=normalize, leave_one_out=loo, return_counts=True,
                      **src)
    if not loo:
        empty = counts == 0
        assert np.all(out[empty] == 0)
        # a group whose weights are all 0 has a zero mean (never NaN)
        if w is not None and reduce == "mean":
            wsum = np.bincount(labels, weights=w.astype(ref.acc_dtype(x.dtype)), minlength=k)
            assert np.all(out[wsum == 0] == 0)
    else:
        single = counts[labels] == 1
        assert np.all(out[single] == 0)
        if w is not None and reduce == "mean":
            w_acc = w.astype(ref.acc_dtype(x.dtype))
            others = np.bincount(labels, weights=w_acc, minlength=k)[labels] - w_acc
            assert np.all(out[others == 0] == 0)
    assert not np.any(np.isnan(out))


@settings(max_examples=80, **SETTINGS)
@given(st.integers(0, 60), st.integers(0, 20), st.integers(1, 8), st.sampled_from([np.float16, np.float32, np.float64]),
       st.integers(0, 2**32 - 1), st.sampled_from(MODES), weight_kinds, st.sampled_from([-30, -8, 0, 3, 6]))
def test_finite_input_gives_finite_output(n, d, k, dtype, seed, mode, wkind, log_scale):
    reduce, normalize, loo = mode
    rng = np.random.default_rng(seed)
    bound = 100.0 if dtype == np.float16 else 10.0 ** log_scale  # float16 sums of 60 x 100 stay < 65504
    x = (rng.uniform(-1, 1, size=(n, d)) * min(bound, 100.0 if dtype == np.float16 else bound)).astype(dtype)
    x[rng.random((n, d)) < 0.1] = 0.0
    labels = rng.integers(0, k, size=n)
    w = make_weights(rng, n, wkind) if reduce in ("sum", "mean") else None
    out = agg(x, labels, num_groups=k, weights=w, reduce=reduce, normalize=normalize, leave_one_out=loo)
    assert np.all(np.isfinite(out)), (reduce, normalize, loo)
    if normalize in ("post", "both"):
        norms = np.sqrt((out.astype(np.float64) ** 2).sum(1))
        assert np.all(norms <= 1 + 2e-3)


@settings(max_examples=80, **SETTINGS)
@given(problems(data_kinds=("normal", "ints")), st.sampled_from(["sum", "mean"]), weight_kinds)
def test_leave_one_out_identity(problem, reduce, wkind):
    """loo_i * B_i + w_i x_i == S_y for rows of groups of >= 2 rows, with B_i = W_y - w_i (mean)
    or 1 (sum); rows whose mean denominator is 0 (and singletons) get exactly 0."""
    x, labels, k, rng = problem
    n = len(labels)
    w = make_weights(rng, n, wkind)
    loo = agg(x, labels, num_groups=k, weights=w, reduce=reduce, leave_one_out=True).astype(np.float64)
    s = agg(x, labels, num_groups=k, weights=w, reduce="sum").astype(np.float64)
    ww = np.ones(n) if w is None else w.astype(ref.acc_dtype(x.dtype)).astype(np.float64)
    x64 = x.astype(np.float64)
    counts = np.bincount(labels, minlength=k)
    if reduce == "mean":
        denom = np.bincount(labels, weights=ww, minlength=k)[labels] - ww
    else:
        denom = np.ones(n)
    valid = (counts[labels] > 1) & (denom != 0)
    assert np.all(loo[~valid] == 0)
    lhs = loo * denom[:, None] + ww[:, None] * x64
    rhs = s[labels]
    tol = 1e-4 if x.dtype == np.float32 else 1e-10
    mag = magnitude(x64, labels, k, ww, "sum", "none", False)[labels]
    assert np.all(np.abs(lhs - rhs)[valid] <= tol * (mag[valid, None] + 1e-300) * 10)


@settings(max_examples=80, **SETTINGS)
@given(problems(dtypes=[np.float16, np.float32, np.float64], data_kinds=("normal", "ints", "special")),
       st.sampled_from(MODES), weight_kinds, st.sampled_from([np.int32, np.int64]))
def test_offsets_form_equals_labels_form_for_sorted_labels(problem, mode, wkind, label_dtype):
    x, labels, k, rng = problem
    reduce, normalize, loo = mode
    labels = np.sort(labels)
    w = make_weights(rng, len(labels), wkind) if reduce in ("sum", "mean") else None
    kw = dict(weights=w, reduce=reduce, normalize=normalize, leave_one_out=loo, return_counts=True)
    a, ca = agg(x, labels.astype(label_dtype), num_groups=k, **kw)
    b, cb = agg(x, offsets=offsets_of(labels, k), **kw)
    b2, _ = agg(x, offsets=offsets_of(labels, k), num_groups=k, **kw)
    np.testing.assert_array_equal(a.view(np.uint8), b.view(np.uint8))  # same bits, signed zeros included
    np.testing.assert_array_equal(b, b2)
    np.testing.assert_array_equal(ca, cb)


@settings(max_examples=50, **SETTINGS)
@given(problems(dtypes=[np.float32, np.float64], data_kinds=("normal", "ints")), st.sampled_from(MODES))
def test_unit_weights_equal_no_weights(problem, mode):
    x, labels, k, _ = problem
    reduce, normalize, loo = mode
    if reduce not in ("sum", "mean"):
        return
    kw = dict(num_groups=k, reduce=reduce, normalize=normalize, leave_one_out=loo)
    np.testing.assert_array_equal(agg(x, labels, weights=np.ones(len(labels)), **kw), agg(x, labels, **kw))
    # integer weights are accepted and mean the same as float ones
    np.testing.assert_array_equal(agg(x, labels, weights=np.ones(len(labels), dtype=np.int64), **kw),
                                  agg(x, labels, **kw))


@settings(max_examples=50, **SETTINGS)
@given(problems(max_n=30, data_kinds=("normal", "ints")), st.sampled_from(["sum", "mean"]), st.integers(0, 2**32 - 1))
def test_integer_weights_equal_repeated_rows(problem, reduce, seed):
    x, labels, k, _ = problem
    reps = np.random.default_rng(seed).integers(1, 4, size=len(labels))
    a = agg(x, labels, num_groups=k, weights=reps.astype(np.float64), reduce=reduce)
    b = agg(np.repeat(x, reps, axis=0), np.repeat(labels, reps), num_groups=k, reduce=reduce)
    tol = 1e-5 if x.dtype == np.float32 else 1e-12
    mag = magnitude(x.astype(np.float64), labels, k, reps.astype(np.float64), reduce, "none", False)
    assert np.all(np.abs(a.astype(np.float64) - b) <= 10 * tol * (mag[:, None] + 1e-300))


@settings(max_examples=60, **SETTINGS)
@given(problems(data_kinds=("normal", "ints")), st.sampled_from(MODES), weight_kinds,
       st.sampled_from([0.25, 3.0, 1024.0]))
def test_normalized_results_ignore_positive_scaling(problem, mode, wkind, scale):
    """'pre' ignores each row's scale; 'post' ignores the centroid's scale; mean ignores the
    weights' scale. Powers of two and 3 keep this a rounding-level comparison."""
    x, labels, k, rng = problem
    reduce, normalize, loo = mode
    w = make_weights(rng, len(labels), wkind) if reduce in ("sum", "mean") else None
    kw = dict(num_groups=k, reduce=reduce, leave_one_out=loo)
    tol = 1e-4 if x.dtype == np.float32 else 1e-10
    if normalize != "none":
        a = agg(x, labels, weights=w, normalize=normalize, **kw)
        b = agg(x * x.dtype.type(scale), labels, weights=w, normalize=normalize, **kw)
        if normalize == "pre":
            np.testing.assert_allclose(a, b, rtol=tol, atol=tol * 10 * max(1.0, len(labels) / max(k, 1)))
        else:
            inner = "pre" if normalize == "both" else "none"
            raw = agg(x, labels, weights=w, normalize=inner, **kw).astype(np.float64)
            mag = magnitude(x.astype(np.float64), labels, k, w, reduce, inner, loo)
            rn = np.sqrt((raw * raw).sum(1)) if raw.shape[1] else np.zeros(raw.shape[0])
            ok = rn > 1e-2 * mag
            np.testing.assert_allclose(a[ok], b[ok], rtol=10 * tol, atol=10 * tol)
    if reduce == "mean" and w is not None:
        a = agg(x, labels, weights=w, reduce="mean", leave_one_out=loo, num_groups=k)
        b = agg(x, labels, weights=w * scale, reduce="mean", leave_one_out=loo, num_groups=k)
        mag = magnitude(x.astype(np.float64), labels, k, w, "mean", "none", loo)
        assert np.all(np.abs(a.astype(np.float64) - b) <= 10 * tol * (mag[:, None] + 1e-300))


@settings(max_examples=60, **SETTINGS)
@given(problems(dtypes=[np.float16], data_kinds=("normal", "ints", "special")), st.sampled_from(MODES),
       weight_kinds, st.booleans())
def test_float16_accumulates_in_float32(problem, mode, wkind, use_offsets):
    """float16 input gives exactly the float32 computation on the same values, rounded once."""
    x, labels, k, rng = problem
    reduce, normalize, loo = mode
    if use_offsets:
        order = np.argsort(labels, kind="stable")
        x, labels = x[order], labels[order]
    src = dict(offsets=offsets_of(labels, k)) if use_offsets else dict(index=labels, num_groups=k)
    w = make_weights(rng, len(labels), wkind) if reduce in ("sum", "mean") else None
    kw = dict(weights=w, reduce=reduce, normalize=normalize, leave_one_out=loo, **src)
    half = agg(x, **kw)
    single = agg(x.astype(np.float32), **kw)
    assert half.dtype == np.float16
    np.testing.assert_array_equal(half.view(np.uint16), single.astype(np.float16).view(np.uint16))


@settings(max_examples=50, **SETTINGS)
@given(problems(max_d=20, data_kinds=("normal",)), st.sampled_from(MODES), st.sampled_from([1, 2]))
def test_non_contiguous_input_gives_the_same_bits(problem, mode, step):
    x, labels, k, _ = problem
    reduce, normalize, loo = mode
    kw = dict(num_groups=k, reduce=reduce, normalize=normalize, leave_one_out=loo)
    wide = np.zeros((x.shape[0], x.shape[1] * 2 + 1), dtype=x.dtype)
    wide[:, 1::2][:, : x.shape[1]] = x
    strided = wide[:, 1::2][:, : x.shape[1]]
    np.testing.assert_array_equal(agg(strided, labels, **kw), agg(np.ascontiguousarray(x), labels, **kw))
    np.testing.assert_array_equal(agg(np.asfortranarray(x), labels, **kw), agg(x, labels, **kw))
    # strided labels (int32 and int64) and weights
    for dt in (np.int32, np.int64):
        lab2 = np.repeat(labels.astype(dt), 2)[::2]
        assert not lab2.flags.c_contiguous or len(labels) <= 1
        np.testing.assert_array_equal(agg(x, lab2, **kw), agg(x, labels, **kw))
    if reduce in ("sum", "mean"):
        w = np.linspace(0.5, 2.0, 2 * len(labels))
        np.testing.assert_array_equal(agg(x, labels, weights=w[::2], **kw),
                                      agg(x, labels, weights=np.ascontiguousarray(w[::2]), **kw))


def test_inputs_are_not_modified():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((20, 5)).astype(np.float32)
    labels = rng.integers(0, 4, 20)
    w = rng.uniform(0.5, 2, 20)
    copies = (x.copy(), labels.copy(), w.copy())
    for reduce, normalize, loo in MODES:
        agg(x, labels, num_groups=4, reduce=reduce, normalize=normalize, leave_one_out=loo,
            weights=w if reduce in ("sum", "mean") else None)
    for a, b in zip((x, labels, w), copies):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("reduce", ["amax", "amin"])
def test_signed_zero_ties_return_the_lowest_rows_value(reduce):
    x = np.array([[-0.0, 0.0], [0.0, -0.0]], dtype=np.float32)
    out = agg(x, np.array([0, 0]), reduce=reduce)
    np.testing.assert_array_equal(np.signbit(out), [[True, False]])


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
@pytest.mark.parametrize("normalize", ["pre", "post"])
def test_float32_normalization_of_large_but_finite_rows(normalize):
    x = np.array([[3e19, 4e19]], dtype=np.float32)
    out = agg(x, np.array([0]), normalize=normalize)
    np.testing.assert_allclose(out, [[0.6, 0.8]], rtol=1e-6)


# ---- native ISA variants -------------------------------------------------------------------------

needs_native = pytest.mark.skipif(_backend.native() is None,
                                  reason="native module not in use (FASTEMB_BACKEND=numpy or not built)")


def _bits(a):
    return None if a is None else a.view(np.dtype(f"u{a.dtype.itemsize}"))


@needs_native
@settings(max_examples=60, **SETTINGS)
@given(problems(max_d=80, dtypes=[np.float16, np.float32, np.float64], data_kinds=("normal", "ints", "special")),
       st.sampled_from(MODES), weight_kinds, st.booleans(), st.sampled_from([1, 2]))
def test_every_isa_gives_the_same_bits(problem, mode, wkind, use_offsets, threads):
    """Forward and backward of every ISA variant are bit-identical to the default one (d up to 80:
    16-lane tails and column blocks are exercised)."""
    C = _backend.native()
    x, labels, k, rng = problem
    reduce, normalize, loo = mode
    if use_offsets:
        order = np.argsort(labels, kind="stable")
        x, labels = x[order], labels[order]
    acc = ref.acc_dtype(x.dtype)
    w = make_weights(rng, len(labels), wkind) if reduce in ("sum", "mean") else None
    w = None if w is None else w.astype(acc)
    lab, off = (None, offsets_of(labels, k)) if use_offsets else (labels, None)
    args = (lab, off, k, w, reduce, normalize, 1e-12, loo)
    grad = rng.standard_normal((len(labels) if loo else k, x.shape[1])).astype(x.dtype)
    before = fastemb.get_num_threads()
    fastemb.set_num_threads(threads)
    try:
        results = {}
        for isa in [""] + native_isas():
            fwd = native_forward(C, x, *args, isa=isa)
            out, counts, wsum, arg, out_norm = fwd
            bwd = native_backward(C, grad, x, *args, out, counts, wsum, arg, out_norm,
                                  need_grad_w=w is not None, isa=isa)
            results[isa] = fwd + bwd
    finally:
        fastemb.set_num_threads(before)
    names = ["out", "counts", "wsum", "arg", "out_norm", "grad_x", "grad_w"]
    base = results[""]
    for isa, res in results.items():
        for name, a, b in zip(names, res, base):
            if a is None or b is None:
                assert a is None and b is None, (isa, name)
                continue
            np.testing.assert_array_equal(_bits(a), _bits(b), err_msg=f"isa={isa} {name} {reduce} {normalize} "
                                                                     f"loo={loo} dtype={x.dtype}")
    # the public API (default ISA) gives the same bits as the explicit default call
    np.testing.assert_array_equal(
        _bits(fastemb.centroid_aggregate(x, labels if not use_offsets else None,
                                         offsets=off, num_groups=k, weights=w, reduce=reduce,
                                         normalize=normalize, leave_one_out=loo)),
        _bits(base[0]))
