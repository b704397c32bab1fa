"""Known harmless third-party messages, filtered by their exact text (never a whole logger or
warning category): what a user would otherwise read as a problem of effbench's."""

from __future__ import annotations

import logging

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
