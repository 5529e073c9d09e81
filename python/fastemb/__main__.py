"""Command line: ``python -m fastemb info``, ``python -m fastemb demo`` and ``python -m fastemb bench``."""
from __future__ import annotations

import argparse
import json
import sys
import time
from typing import List, Optional


def _cmd_info(args: argparse.Namespace) -> int:
    import fastemb

    data = fastemb.info()
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    width = max(len(k) for k in data)
    for key, value in data.items():
        if key == "cpu_features":
            value = " ".join(name for name, on in value.items() if on) or "-"
        elif key == "kernel_isas":
            value = " ".join(f"{family}={variant}" for family, variant in value.items()) or "-"
        print(f"{key:<{width}}  {value}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from . import demo

    return demo.run(rows=args.rows, dim=args.dim, groups=args.groups)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fastemb", description="fastemb: fast embedding kernels")
    sub = parser.add_subparsers(dest="command", required=True)
    p_info = sub.add_parser("info", help="version, backend, ISA, threads, CUDA")
    p_info.add_argument("--json", action="store_true", help="print JSON")
    p_info.set_defaults(func=_cmd_info)
    p_demo = sub.add_parser("demo", help="run the kernels on built-in data and check them against NumPy")
    p_demo.add_argument("--rows", type=int, default=200_000)
    p_demo.add_argument("--dim", type=int, default=128)
    p_demo.add_argument("--groups", type=int, default=1_000)
    p_demo.set_defaults(func=_cmd_demo)
    from . import bench_cli  # stdlib-only module; the suites run in a subprocess

    p_bench = sub.add_parser("bench", help="run the microbenchmarks with the installed peers on this machine")
    bench_cli.add_arguments(p_bench)
    p_bench.set_defaults(func=lambda a: bench_cli.main(a, "python -m fastemb " + " ".join(
        sys.argv[1:] if argv is None else argv)))
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
