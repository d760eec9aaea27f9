"""Sphinx configuration of the vkscraper documentation (``make docs``).

The pages are Markdown (MyST), so the tests that run the examples read the same fenced code
blocks a reader copies. Nothing is imported from the package: the reference pages are written
by hand and ``tests/test_docs.py`` checks them against the code.
"""

project = "vkscraper"
author = "vkscraper developers"
copyright = "vkscraper developers"
release = "0.1.0"

extensions = ["myst_parser"]
source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build"]

# Section anchors for links such as [](../topics/rate-limiting.md#several-tokens).
myst_heading_anchors = 3

# alabaster, Sphinx's default theme, loads no web font and no script from outside: the built
# pages read offline (tests/test_docs.py checks the built HTML when it exists).
html_theme = "alabaster"
html_theme_options = {"font_family": "sans-serif", "head_font_family": "sans-serif"}
html_static_path: list[str] = []
html_show_sourcelink = False
html_copy_source = False
