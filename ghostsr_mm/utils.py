"""Small helpers shared across the package."""
import contextlib
import threading

__all__ = ['InputError', 'ThreadLocalSwitch']


class InputError(ValueError):
    """Input the user gave that cannot be used (a file, a config value, an
    argument), raised where it is checked; the message names it and what
    was expected. The tools print it as one line; any other exception is a
    defect and keeps its traceback."""


class ThreadLocalSwitch:
    """An on/off switch, off by default, that ``with switch.on():`` turns on
    for the current thread inside the block (nesting restores the previous
    state)."""

    def __init__(self) -> None:
        self._local = threading.local()

    def __bool__(self) -> bool:
        return getattr(self._local, 'on', False)

    @contextlib.contextmanager
    def on(self):
        previous = bool(self)
        self._local.on = True
        try:
            yield
        finally:
            self._local.on = previous
