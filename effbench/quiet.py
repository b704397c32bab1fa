"""Third-party messages a user would read as effbench's problems: known harmless ones filtered by
their exact text (never a whole logger or warning category), and the libraries' logging and
warnings routed into OUT/libraries.log while a command works (-v: left on the terminal)."""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from pathlib import Path

from effbench.atomic import write_json_atomic

# bitsandbytes 0.49 on a CPU, at import: it looks for an optional hub kernel ("kernels-community")
# for 4-bit matmuls and falls back to its own; nothing is missing for effbench.
_BNB_LOGGER = "bitsandbytes.backends.cpu.ops"
_BNB_PREFIX = "Failed to load CPU gemm_4bit_forward from kernels-community"


class _DropPrefix(logging.Filter):
    def __init__(self, prefix: str):
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.prefix)


def quiet_known_messages() -> None:
    """Install the filters (idempotent); before the libraries load, in every effbench process."""
    logger = logging.getLogger(_BNB_LOGGER)
    if not any(isinstance(f, _DropPrefix) for f in logger.filters):
        logger.addFilter(_DropPrefix(_BNB_PREFIX))


# --- where the libraries' own messages go (issue 18: quiet by default, -v for the chatty mode) ---

LIBRARY_LOG = "libraries.log"
LOG_ENV = "EFFBENCH_LIBRARY_LOG"  # set while a command routes: the backend worker it spawns routes too
# Loggers of the libraries effbench drives; each keeps its own level (WARNING and up, by default).
_LOGGERS = ("helm", "transformers", "bitsandbytes", "datasets", "huggingface_hub", "peft", "accelerate", "torch", "filelock",
            "urllib3", "vllm", "py.warnings")
_OURS = str(Path(__file__).resolve().parent)


@contextlib.contextmanager
def libraries_logged_to(file: Path | None):
    """Within: HELM's, transformers', vLLM's ... log records and the Python warnings raised in
    third-party code go to `file` (appended), not to the terminal; effbench's own warnings and
    errors still print. `file` None (-v): nothing is routed, the libraries print as they do."""
    if file is None:
        yield None
        return
    file.parent.mkdir(parents=True, exist_ok=True)
    saved_env = {k: os.environ.get(k) for k in (LOG_ENV, "VLLM_LOGGING_CONFIG_PATH")}
    undo = route_libraries(file)
    try:
        yield file
    finally:
        undo()
        for k, v in saved_env.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)


def route_libraries(file: Path, children: bool = True):
    """Route this process's library messages into `file`; returns the undo. `children`: processes
    spawned meanwhile (the backend worker, vLLM's engine) inherit an environment that routes theirs."""
    # vLLM configures its logging at import from a dictConfig file, in the worker and its engine
    # process. Written first: a full or read-only folder fails here, before any logger is touched.
    vllm_config = file.parent / f".{file.name}.vllm.json"
    if children:
        write_json_atomic(vllm_config, {"version": 1, "disable_existing_loggers": False, "handlers": {"file": {
            "class": "logging.FileHandler", "filename": str(file), "mode": "a", "encoding": "utf-8"}},
            "loggers": {"vllm": {"handlers": ["file"], "level": "INFO", "propagate": False}}})
        os.environ["VLLM_LOGGING_CONFIG_PATH"] = str(vllm_config)
    os.environ[LOG_ENV] = str(file)
    handler = logging.FileHandler(file, mode="a", encoding="utf-8", delay=True)
    handler.setFormatter(logging.Formatter("%(asctime)s %(process)d %(name)s %(levelname)s: %(message)s"))
    saved = {}
    for name in _LOGGERS:
        logger = logging.getLogger(name)
        saved[name] = logger.propagate
        logger.addHandler(handler)
        logger.propagate = False
    # transformers prints through its own stderr handler on its root logger: set aside while routed
    tf_logging = _transformers_logging()
    if tf_logging is not None:
        tf_logging.disable_default_handler()
    show = warnings.showwarning

    def show_routed(message, category, filename, lineno, file_=None, line=None):
        if str(filename).startswith(_OURS):  # effbench's own: the user's to read
            return show(message, category, filename, lineno, file_, line)
        logging.getLogger("py.warnings").warning(warnings.formatwarning(message, category, filename, lineno, line).rstrip())

    warnings.showwarning = show_routed

    def undo() -> None:
        warnings.showwarning = show
        for name, propagate in saved.items():
            logger = logging.getLogger(name)
            logger.removeHandler(handler)
            logger.propagate = propagate
        if tf_logging is not None:
            tf_logging.enable_default_handler()
        handler.close()
        if children:
            vllm_config.unlink(missing_ok=True)

    return undo


def route_from_environment() -> None:
    """In the backend worker a routing command spawned: its log records, and its stderr as a whole
    (what native code writes there: torch, vLLM, multiprocessing's resource tracker and its "leaked
    semaphore" notes), go to the command's log. Its stdout is left alone, and what goes wrong in it
    reaches the user through the parent, which raises it."""
    if (file := os.environ.get(LOG_ENV)):
        fd = os.open(file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.dup2(fd, 2)
        os.close(fd)
        route_libraries(Path(file), children=False)


def _transformers_logging():
    """transformers' logging module, or None where transformers is not installed (its stderr
    handler is added on first use, so it is imported here, before anything logs)."""
    try:
        from transformers.utils import logging as tf_logging
    except ImportError:
        return None
    return tf_logging


def thread_lock_for_progress_bars() -> None:
    """In the backend worker: tqdm guards its bars (transformers' "Loading weights") with a
    multiprocessing RLock, which in a spawned process is a named semaphore registered with the
    resource tracker; the worker is stopped without finalizers, so at the end the tracker printed
    "There appear to be 1 leaked semaphore objects". One process draws these bars: a thread lock
    does, and nothing is left to leak."""
    import threading

    from tqdm import tqdm

    tqdm.set_lock(threading.RLock())
