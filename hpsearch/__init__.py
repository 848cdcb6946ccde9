"""hpsearch: hyperparameter search over Keras architectures on Ray, and ensembles of the finished trials."""

__version__ = "0.1.0"
