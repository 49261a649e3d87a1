"""One measurement in a fresh Python process, so that its peak memory and its time are its own.

The parent passes a measuring function by name (``"module:function"``) and a JSON-able spec; the child calls
``function(spec)`` and prints its result dict as one ``RESULT {...}`` line on stdout.
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from typing import Any

MARK = "RESULT "


def run_in_subprocess(function: str, spec: dict[str, Any], timeout: float) -> dict[str, Any]:
    """``function(spec)`` in a fresh process, stopped after ``timeout`` seconds.

    Returns the function's dict with ``status`` "ok", or ``{"status": "timeout" | "error", "reason": ...}``.
    """
    code = f"import sys; from {__name__} import child; sys.exit(child(sys.argv[1], sys.argv[2]))"
    try:
        done = subprocess.run(
            [sys.executable, "-c", code, function, json.dumps(spec)],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return {"status": "timeout", "reason": f"timeout after {timeout:.0f} s"}
    for line in reversed(done.stdout.splitlines()):
        if line.startswith(MARK):
            return json.loads(line[len(MARK) :])
    tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
    return {"status": "error", "reason": f"exit code {done.returncode}: {' | '.join(tail)[:300]}"}


def child(function: str, spec_json: str) -> int:
    """Entry point of the measuring process: prints one ``RESULT`` JSON line, whatever happens."""
    module, name = function.split(":")
    try:
        result = {"status": "ok", **getattr(importlib.import_module(module), name)(json.loads(spec_json))}
    except Exception as error:  # e.g. "can't allocate memory", CUDA out of memory, bad input
        result = {"status": "error", "reason": f"{type(error).__name__}: {str(error)[:300]}"}
    print(MARK + json.dumps(result), flush=True)
    return 0
