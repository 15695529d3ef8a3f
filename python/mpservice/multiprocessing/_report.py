"""The child's side of :class:`~mpservice.multiprocessing.SpawnProcess`: forwarding log
records into the parent's inbox while the target runs, and sending the outcome last.

Kept apart from ``_process`` (the parent's side) and free of imports a child may not need:
every spawned child pays for what this module imports. In particular ``logging`` is not
imported here: if the child has not imported it when the target starts, forwarding is set
up at the moment something imports it (an import hook), and a ``warnings`` message that
comes first sets it up too. A child that never logs never imports logging.
"""

import faulthandler
import sys

from .. import _mpx


class ChildReport:
    """Made in the child by unpickling the parent's ``_process.Launch``."""

    is_child_report = True  # how SpawnProcess.run tells it from the parent's Launch

    def __init__(self, token, inbox_fd, fault_fd, levels) -> None:
        import os

        self.token = token
        self.inbox = _mpx.Inbox(inbox_fd)
        os.close(inbox_fd)
        self.fault_fd = fault_fd
        self.levels = levels
        self._handler = None  # the forwarding handler, once installed
        self._decided = False  # whether forwarding was decided (on or off)
        self._hook = None
        self._showwarning = None  # warnings.showwarning before ours

    def start(self) -> None:
        try:
            faulthandler.enable(self.fault_fd, all_threads=True)
        except (OSError, ValueError, RuntimeError):
            pass
        logging = sys.modules.get("logging")
        if logging is not None:
            self._decide(logging)
            return
        self._hook = _ImportHook("logging", self._decide)
        sys.meta_path.insert(0, self._hook)
        import warnings

        self._showwarning = warnings.showwarning
        warnings.showwarning = self._warning_first

    def _decide(self, logging) -> None:
        """Turns forwarding on, unless the child configured logging itself."""
        if self._decided:
            return
        self._decided = True
        root = logging.getLogger()
        if root.handlers:
            return  # the child configured logging itself: forwarding is off
        if self.levels is not None:
            levels, disable = self.levels
            for name, level in levels.items():
                logging.getLogger(name or None).setLevel(level)
            logging.disable(disable)
        self._handler = _forward_handler(logging, self.inbox)
        root.addHandler(self._handler)
        logging.captureWarnings(True)

    def _warning_first(self, message, category, filename, lineno, file=None, line=None):
        """warnings.showwarning until logging is imported: a warning sets forwarding up
        (warnings arrive as py.warnings records), then goes where it now should."""
        import warnings

        if file is None and not self._decided:
            import logging  # the hook decides

            self._decide(logging)  # in case it was imported before the hook saw it
            if warnings.showwarning is not self._warning_first:
                warnings.showwarning(message, category, filename, lineno, file, line)
                return
        self._showwarning(message, category, filename, lineno, file, line)

    def stop(self) -> None:
        if self._hook is not None:
            try:
                sys.meta_path.remove(self._hook)
            except ValueError:
                pass
            self._hook = None
        if self._handler is not None:
            import logging

            logging.captureWarnings(False)
            logging.getLogger().removeHandler(self._handler)
            self._handler = None
        if self._showwarning is not None:
            import warnings

            if warnings.showwarning is self._warning_first:
                warnings.showwarning = self._showwarning
            self._showwarning = None

    def send(self, code: int, data: bytes) -> None:
        self.inbox.send_outcome(self.token, code, data)


class _ImportHook:
    """A meta-path finder that calls `callback(module)` right after `name` is imported
    (once), then gets out of the way."""

    def __init__(self, name, callback) -> None:
        self.name = name
        self.callback = callback

    def find_spec(self, name, path=None, target=None):
        if name != self.name:
            return None
        try:
            sys.meta_path.remove(self)
        except ValueError:
            pass
        for finder in sys.meta_path:
            find = getattr(finder, "find_spec", None)
            spec = find(name, path, target) if find else None
            if spec is not None:
                break
        else:
            return None
        if spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        spec.loader = _NotifyingLoader(spec.loader, self.callback)
        return spec


class _NotifyingLoader:
    def __init__(self, loader, callback) -> None:
        self._loader = loader
        self._callback = callback

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module) -> None:
        # Put the real loader back first: the module should not keep this wrapper.
        module.__loader__ = self._loader
        if module.__spec__ is not None:
            module.__spec__.loader = self._loader
        self._loader.exec_module(module)
        self._callback(module)

    def __getattr__(self, name):
        return getattr(self._loader, name)


def _forward_handler(logging, inbox):
    """A logging handler that sends every record it handles into the parent's inbox (in
    libmpx)."""
    import functools
    import pickle

    formatter = logging.Formatter()
    send = inbox.send_log
    # What a record has of its own; anything else came from extra=... (or a formatter, which
    # adds message and asctime: those are remade in the parent).
    standard = frozenset(logging.makeLogRecord({}).__dict__)
    remade = standard | {"message", "asctime"}

    def full_message(record) -> str:
        msg = record.getMessage()
        if record.exc_info and not record.exc_text:
            record.exc_text = formatter.formatException(record.exc_info)
        if record.exc_text:
            msg = f"{msg}\n{record.exc_text}"
        if record.stack_info:
            msg = f"{msg}\n{formatter.formatStack(record.stack_info)}"
        return msg

    def extra_of(record) -> bytes | None:
        extra = {k: v for k, v in record.__dict__.items() if k not in remade}
        if not extra:
            return None
        try:
            return pickle.dumps(extra, 5)
        except Exception:
            # Ship what pickles; what does not is shown as its repr.
            fixed = {}
            for k, v in extra.items():
                try:
                    pickle.dumps(v, 5)
                    fixed[k] = v
                except Exception:
                    fixed[k] = repr(v)
            return pickle.dumps(fixed, 5)

    class ForwardHandler(logging.Handler):
        def handle(self, record):
            # No lock: the inbox send is thread-safe and never waits for the parent.
            if self.filters and not self.filter(record):
                return False
            try:
                plain = not (record.exc_info or record.exc_text or record.stack_info)
                send(record, None if plain else full_message(record), extra_of(record))
            except Exception:
                self.handleError(record)
            return True

        def emit(self, record):
            self.handle(record)

    handler = ForwardHandler()
    # The hot path in C: logging calls handler.handle(record) for every record, and this
    # instance attribute answers it without a Python frame, falling back to the method
    # above for records that need formatting, carry extra attributes, or failed to send.
    handler.handle = functools.partial(inbox.forward, handler.handle, len(standard))
    return handler
