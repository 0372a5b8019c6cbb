"""Moved to `casebook.cli` (the entry point lives above the layers, not in shared/).

Kept only while tests/test_video_recommendation_serve.py still runs `python -m shared.cli`;
the lead removes this file once that test runs `python -m casebook`.
"""

import sys

from casebook.cli import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
