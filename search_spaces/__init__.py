"""Search spaces over Keras architectures: the space language and the library.

``from search_spaces import load_space`` stays cheap: nothing here imports
TensorFlow, Optuna or Hyperopt (see ``search_spaces.space``).
"""

from search_spaces.space import (
    FAMILY_NAMES,
    LIBRARY_DIR,
    Param,
    Space,
    SpaceError,
    list_library,
    load_space,
)

__all__ = [
    "FAMILY_NAMES",
    "LIBRARY_DIR",
    "Param",
    "Space",
    "SpaceError",
    "list_library",
    "load_space",
]
