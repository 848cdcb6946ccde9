"""The core layer: spec, data preparation, metrics, the run directory, atomic writes, errors,
plug-in registries. Imports only ``search_spaces`` below it; nothing here imports Ray,
TensorFlow or the search loop."""
