"""The trainer's ``ecg-anomaly`` subcommands: ``train``, ``evaluate`` and ``score``.

Each module exposes ``configure(parser)``; importing one costs numpy at most.
"""
