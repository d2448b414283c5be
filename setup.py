"""The worker's two C extensions (their files say why); everything else is in pyproject.toml.

Built by pip from the sources with the machine's C compiler; CPython's API only, no other headers.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension("ecg_anomaly.worker._events", ["worker/_events.c"]),
        Extension("ecg_anomaly.worker._records", ["worker/_records.c"]),
    ]
)
