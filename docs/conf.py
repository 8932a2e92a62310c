"""Sphinx configuration for the wavesign documentation."""

project = "wavesign"
author = "the wavesign developers"
copyright = "2026, the wavesign developers"

extensions = ["myst_parser", "sphinx_click"]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3
exclude_patterns = ["_build"]
html_theme = "alabaster"
nitpicky = False
