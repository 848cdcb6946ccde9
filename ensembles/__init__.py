"""ensembles: blend and select the finished trials of an hpsearch run (pure numpy/scipy/scikit-learn)."""
