"""The site stage: an mkdocs plugin that turns run directories into linked, offline pages.

It reads files only (no TensorFlow, no Altair). One concern per module:

- :mod:`~deepeyes_keras.site.plugin`: the mkdocs hooks, entry point ``deepeyes``.
- :mod:`~deepeyes_keras.site.config`: the plugin's options.
- :mod:`~deepeyes_keras.site.runs`: finding run directories and loading them for the pages.
- :mod:`~deepeyes_keras.site.generated`: which pages are generated, and rendering one;
  :mod:`~deepeyes_keras.site.pages` (home, run, layer), :mod:`~deepeyes_keras.site.compare`
  and :mod:`~deepeyes_keras.site.findings_html` write their HTML with the builders of
  :mod:`~deepeyes_keras.site.markup`.
- :mod:`~deepeyes_keras.site.blocks`: ``deepeyes`` fenced blocks in an author's pages.
- :mod:`~deepeyes_keras.site.nav`: the navigation section of the generated pages.
- :mod:`~deepeyes_keras.site.bundle`: the vega scripts the site serves itself.

Example:
    In ``mkdocs.yml``::

        plugins:
          - deepeyes:
              runs: deepeyes_runs
"""
