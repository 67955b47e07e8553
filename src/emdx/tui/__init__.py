"""The terminal UI (`emdx gui`): a Textual shell over the same service as the CLI."""
