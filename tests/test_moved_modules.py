"""Import paths that moved to control/ (issue 27) keep working for one release: the old path
warns with a DeprecationWarning naming the new one and gives the very same objects."""

import importlib
import sys
import warnings

import pytest


@pytest.mark.parametrize("old,new", [
    ("embodied_stack.models.elastic.budget", "embodied_stack.control.elastic.budget"),
    ("embodied_stack.models.elastic.selector", "embodied_stack.control.elastic.selector"),
])
def test_an_old_module_path_warns_and_gives_the_same_objects(old, new):
    sys.modules.pop(old, None)  # (imported before: import it afresh, as a user's process would)
    with pytest.warns(DeprecationWarning, match=new):
        module = importlib.import_module(old)
    moved = importlib.import_module(new)
    assert moved.__all__ and all(getattr(module, name) is getattr(moved, name)
                                 for name in moved.__all__)


def test_the_latency_table_names_of_profiling_warn_and_forward():
    from embodied_stack.control.elastic import latency_table
    from embodied_stack.models.runtime import profiling

    for name in profiling.MOVED_TO_LATENCY_TABLE:
        with pytest.warns(DeprecationWarning, match=f"control.elastic.latency_table.{name}"):
            assert getattr(profiling, name) is getattr(latency_table, name)
    with pytest.warns(DeprecationWarning):
        from embodied_stack.models.runtime.profiling import device_key
    assert device_key is latency_table.device_key
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # what stayed imports without a warning
        from embodied_stack.models.runtime.profiling import measure_latency, percentiles  # noqa: F401
    with pytest.raises(AttributeError):
        profiling.no_such_name  # noqa: B018
