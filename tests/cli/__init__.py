"""The ``layerfast`` command line (``layerfast/cli/``)."""
