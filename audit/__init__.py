"""shortcut-audit: find text-only shortcuts in multimodal preference data.

The library behind the `shortcut-audit` command. Each pipeline stage is a module
(`audit.synth`, `audit.ingest`, ...) whose entry point is a plain function taking its config
dataclass from `audit.config`. Heavy libraries are imported lazily inside those functions.
"""

__version__ = "0.1.0"
