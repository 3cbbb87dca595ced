#!/usr/bin/env python
"""CI entry point: refresh the curated Hub datasets listed in a config file.

    python scripts/refresh.py --config instag-refresh.yaml [--target REPO] [--force] [--dry-run]

It is `instag refresh` (same options, same output), runnable from a checkout without the
console script on PATH. Environment: INSTAG_ENDPOINT (the tagging server, unless the
config names one), HF_TOKEN (write access to the target repos), optionally HF_ENDPOINT
and INSTAG_CACHE_DIR.

Exit codes: 0 every target updated, proposed or already up to date; 1 a target failed
(the others were still refreshed; the log says which and why); 2 the config is invalid.
"""

from __future__ import annotations

import sys

from instag_hf.cli import main

if __name__ == "__main__":
    sys.exit(main(["refresh", *sys.argv[1:]], prog_name="scripts/refresh.py"))
