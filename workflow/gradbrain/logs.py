"""Logging and threading set-up shared by the rule entry points."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path


def setup(log_file: str | None = None, threads: int | None = None) -> logging.Logger:
    """Log to the rule's log file and to stderr; pin torch to the rule's threads."""
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_file, mode="w"))
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s", handlers=handlers, force=True
    )
    logging.captureWarnings(True)
    sys.excepthook = _log_uncaught
    if threads:
        try:
            import torch
        except ImportError:  # rules whose environment has no torch
            pass
        else:
            torch.set_num_threads(int(threads))
    return logging.getLogger("gradbrain")


def _log_uncaught(kind, value, tb) -> None:
    """Write an error that ends the job to the rule's log as well, where the user looks for it."""
    logging.getLogger("gradbrain").error("%s: %s", kind.__name__, value, exc_info=(kind, value, tb))


def progress(label: str, every_seconds: float = 10.0) -> Callable[[int, int], None]:
    """A ``progress(done, total)`` callback that logs the count, rate and time left at most every few seconds."""
    log = logging.getLogger("gradbrain.progress")
    state = {"t0": time.time(), "last": 0.0}

    def report(done: int, total: int) -> None:
        now = time.time()
        if done < total and now - state["last"] < every_seconds:
            return
        state["last"] = now
        rate = done / max(now - state["t0"], 1e-9)
        left = (total - done) / rate if rate > 0 else float("nan")
        log.info("%s: %d/%d images (%.0f/s, %.0f s left)", label, done, total, rate, left)

    return report
