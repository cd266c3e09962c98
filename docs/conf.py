"""Sphinx configuration of the documentation site: `python tools/build_docs.py` (the chapters are the notebooks of nbs/
with their stored outputs; nothing is executed; the API pages come from the docstrings and argument comments)."""
import configparser
from pathlib import Path

_settings = configparser.ConfigParser(delimiters=['='])
_settings.read(Path(__file__).resolve().parent.parent / 'settings.ini', encoding='utf-8')
_cfg = _settings['DEFAULT']

project = _cfg['lib_name']
author = _cfg['author']
copyright = _cfg['copyright']
release = version = _cfg['version']

extensions = ['myst_nb', 'sphinx.ext.autodoc', 'sphinx.ext.mathjax', 'sphinx.ext.viewcode']
exclude_patterns = ['_build', '**.ipynb_checkpoints']

# the notebooks as they were stored: outputs and figures come from the files, no kernel is started
nb_execution_mode = 'off'
nb_ipywidgets_js = {}                 # stored widget views fall back to their text; no widget manager from a CDN
myst_enable_extensions = ['dollarmath', 'colon_fence', 'deflist']
myst_heading_anchors = 3
suppress_warnings = ['myst.header', 'mystnb.unknown_mime_type', 'misc.highlighting_failure']

# API pages: members in source order, with signatures; argument comments are added by tools/build_docs.py
autodoc_default_options = {'members': True, 'undoc-members': True, 'member-order': 'bysource', 'show-inheritance': True}
autodoc_typehints = 'signature'
autodoc_preserve_defaults = True

html_theme = 'furo'
html_title = f'{project} {release}'
html_static_path = []
html_show_sourcelink = False
html_copy_source = False
