"""Progress bars (tqdm: rate and ETA) that stay readable in CI logs."""
from __future__ import annotations

import sys

from tqdm.auto import tqdm


def bar(total: int, desc: str, initial: int = 0, unit: str = "step"):
    from .dist import is_main

    tty = sys.stderr.isatty()
    return tqdm(total=total, initial=initial, desc=desc, unit=unit, dynamic_ncols=True,
                mininterval=0.5 if tty else 30.0, leave=True, file=sys.stderr,
                disable=not is_main())           # under torchrun, one bar (rank 0's)
