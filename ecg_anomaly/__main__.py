"""``python -m ecg_anomaly``: the same as the ``ecg-anomaly`` command."""

import sys

from ecg_anomaly.cli import main

sys.exit(main())
