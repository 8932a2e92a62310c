"""wavesign.online: the broker and the operator's command-line client.

Imports ``wavesign.shared``; never ``wavesign.offline``.
"""
