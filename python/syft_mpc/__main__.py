"""``python -m syft_mpc worker ...`` / ``python -m syft_mpc launch ...`` (see :mod:`syft_mpc.net.cli`)."""

import sys

from syft_mpc.net.cli import main

sys.exit(main())
