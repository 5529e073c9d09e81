"""pytest plugin loaded by ``python -m fastemb bench`` (``-p fastemb._bench_progress``) in the benchmark
subprocess: reports collection, test starts and outcomes (with skip reasons) as JSON lines on the file
descriptor named by ``FASTEMB_BENCH_PROGRESS_FD``, a pipe the parent reads while pytest's own output
goes to a log. Does nothing when the variable is not set.
"""
from __future__ import annotations

import json
import os
import time
from typing import Any, Dict, Optional

_stream = None


def _emit(event: Dict[str, Any]) -> None:
    global _stream
    if _stream is None:
        fd = os.environ.get("FASTEMB_BENCH_PROGRESS_FD")
        if not fd:
            return
        try:
            _stream = os.fdopen(int(fd), "w", buffering=1)
        except (OSError, ValueError):
            return
    event["t"] = time.time()
    try:
        _stream.write(json.dumps(event) + "\n")
        _stream.flush()
    except (OSError, ValueError):
        pass


def _skip_reason(report: Any) -> Optional[str]:
    lr = report.longrepr
    if isinstance(lr, tuple) and len(lr) == 3:
        reason = str(lr[2])
    else:
        reason = str(lr) if lr is not None else ""
    return reason[len("Skipped: "):] if reason.startswith("Skipped: ") else reason


def pytest_collection_finish(session: Any) -> None:
    _emit({"event": "collected", "n": len(session.items)})


def pytest_runtest_logstart(nodeid: str, location: Any) -> None:
    _emit({"event": "start", "nodeid": nodeid})


def pytest_runtest_logreport(report: Any) -> None:
    if report.when == "call" or report.outcome != "passed":
        ev = {"event": "report", "nodeid": report.nodeid, "when": report.when, "outcome": report.outcome,
              "duration": report.duration}
        if report.skipped:
            ev["reason"] = _skip_reason(report)
        elif report.failed:
            ev["error"] = str(report.longrepr).strip().splitlines()[-1][:300] if report.longrepr else ""
        _emit(ev)
