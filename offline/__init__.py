"""wavesign.offline: the air-gapped signing appliance.

Imports ``wavesign.shared`` only, never the broker half (tests/test_packaging.py
checks). It installs with ``pip install wavesign[offline]``, which pulls no server,
database or HTTP package.
"""
