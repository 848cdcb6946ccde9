"""The competition pipeline: search, ensemble and a checked submission in one call, above
both ``hpsearch``'s search and ``ensembles``; the example competitions and the demo."""
