"""cinebrain: predict brain activity from naturalistic stimuli.

Layers, left to right (a module imports only from layers to its left):
``io -> timing -> features -> data -> linear | nn + models + train -> evaluate -> report``.
"""

from cinebrain.errors import ConfigError, InputError

__version__ = "0.1.0"
__all__ = ["InputError", "ConfigError", "__version__"]
