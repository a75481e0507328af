"""Deprecated: moved to ``embodied_stack.control.elastic.selector`` (a control decision, not
model code). This alias re-exports its public names for one release, with a warning."""

import warnings

from embodied_stack.control.elastic import selector as _moved

warnings.warn("embodied_stack.models.elastic.selector moved to embodied_stack.control.elastic.selector; "
              "the old path goes in the next release", DeprecationWarning, stacklevel=2)

__all__ = list(_moved.__all__)
globals().update({name: getattr(_moved, name) for name in __all__})
