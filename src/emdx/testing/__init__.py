"""Test support: a scripted Anthropic Messages API server for driving the real Claude Code CLI."""
