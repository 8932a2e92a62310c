"""wavesign.shared: what both sides of the air gap agree on.

TUF helpers over python-tuf's Metadata API, keys and key files, canonical bytes and
digests, signing bundles and the QR codec. Neither ``wavesign.online`` nor
``wavesign.offline`` is imported from here.
"""
