"""Where the real recordings live: ``../shared/fixtures`` beside the checkout.

``CELLGUARD_SHARED_FIXTURES`` overrides the place. A missing folder is a collection
error, never a silently skipped test.
"""

from __future__ import annotations

import os
from pathlib import Path

SHARED_FIXTURES = Path(
    os.environ.get(
        "CELLGUARD_SHARED_FIXTURES",
        Path(__file__).resolve().parents[2] / "shared" / "fixtures",
    )
)
if not (SHARED_FIXTURES / "neware-bts-api").is_dir():
    raise RuntimeError(
        f"real fixtures not found at {SHARED_FIXTURES}: clone the repo beside shared/ "
        "or set CELLGUARD_SHARED_FIXTURES"
    )
NEWARE_API_FIXTURES = SHARED_FIXTURES / "neware-bts-api"
NEWARE_FILES = SHARED_FIXTURES / "neware-files"

# The protocol example, shipped for users in docs/examples (it must work as written).
EXAMPLE_PROTOCOL = (
    Path(__file__).resolve().parents[1] / "docs" / "examples" / "asymmetric-0.5-0.5.toml"
).read_text(encoding="utf-8")
