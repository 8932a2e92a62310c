"""wavesign.online: the broker and the operator's command-line client.

Imports ``wavesign.shared`` only: never the appliance half (tests/test_packaging.py checks).
"""
