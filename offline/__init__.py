"""wavesign.offline: the air-gapped signing appliance.

Imports ``wavesign.shared``; never ``wavesign.online``. It installs with
``pip install wavesign[offline]``, which pulls no server, database or HTTP package.
"""
