"""``python -m syft_mpc worker ...`` / ``python -m syft_mpc launch ...`` (see :mod:`syft_mpc.cli`)."""

import sys

from syft_mpc.cli import main

sys.exit(main())
