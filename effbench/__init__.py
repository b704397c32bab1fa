"""effbench: time-limited evaluation of fine-tuned LLMs with HELM scenarios."""

__version__ = "0.1.0"
