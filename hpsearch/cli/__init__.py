"""The command-line layer: ``hpsearch`` (``hpsearch.cli.app``) and its job commands
(``hpsearch.cli.jobs``). Parses, calls the Python API, formats; the top layer."""
