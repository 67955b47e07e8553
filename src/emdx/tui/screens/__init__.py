"""The TUI's screens, one module each: `documents` and `executions` (the app's two modes)."""
