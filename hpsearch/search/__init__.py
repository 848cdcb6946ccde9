"""The search layer: samplers, trial functions, the Ray trial runner and the search loop.
Imports ``hpsearch.core`` and ``search_spaces``; never ``ensembles``, the pipeline or the CLI."""
