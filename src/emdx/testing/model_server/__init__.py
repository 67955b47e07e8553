"""A scripted Anthropic Messages API server for running the real Claude Code CLI offline.

Integration tests point the CLI at this server (``ANTHROPIC_BASE_URL``) so that a real
``claude -p`` process runs real tools in a real working directory, while the "model" follows a
script written as plain JSON data.

Script format
-------------
A script is a list of turns. Each turn is a dict with one of:

* ``{"text": "..."}`` -- an ``end_turn`` answer.
* ``{"tool_use": {"name": "Bash", "input": {...}}}`` -- a ``tool_use`` answer, optionally with a
  leading ``"text"``. ``tool_use`` may also be a list of such dicts (one API turn with several
  tool calls: Claude Code prints one ``assistant`` event per content block, all with the same
  ``message.id``); an ``"id"`` key is optional. A Bash call with ``"run_in_background": true``
  in its input starts a background task: the CLI answers the call at once, and when the task
  ends (after the turn's ``result`` if it outlives it) sends another request, the next turn.
* ``{"error": {"status": 400, "type": "invalid_request_error", "message": "..."}}`` -- an HTTP
  error in Anthropic's error JSON shape, optionally with ``"headers": {...}`` and
  ``"rate_limit": {...}`` (below) sent with the error only. With
  ``"times": K`` only the first K requests for this turn (of one conversation) get the error,
  later ones (the CLI's retries, or a ``--resume``) get the turn's ``text``/``tool_use`` -- e.g.
  "529 twice, then succeed". Without ``times`` every request gets it (Claude Code then retries
  10 times over about three minutes; see ``offline_claude_env(max_retries=...)``).

and optionally:

* ``"sleep": seconds`` -- delay before anything is sent (stall tests). A turn with only
  ``sleep`` answers like the end-of-script turn.
* ``"usage": {"input_tokens": N, "output_tokens": M, ...}`` -- token counts to report; any
  other keys (``cache_read_input_tokens``, ``cache_creation_input_tokens``,
  ``server_tool_use``...) are passed through. ``message_start`` carries them all with
  ``output_tokens: 1``, ``message_delta`` the final ``output_tokens``, as the real API does.
* ``"headers": {"name": "value"}`` -- response headers of every answer of this turn, success
  or error (e.g. ``retry-after``, ``x-should-retry``).
* ``"rate_limit": {"status": "allowed_warning", "reset_in": 3600}`` -- on the turn (every
  answer) or in its ``error`` (the error answers only, e.g. ``{"status": 429, "type":
  "rate_limit_error", "message": "...", "times": 1, "rate_limit": {"reset_in": 20}}``): the
  subscription rate-limit headers (``anthropic-ratelimit-unified-*``: status, reset,
  representative claim, the ``5h``/``7d`` windows, overage status and disabled reason, and
  ``retry-after`` with a rejection) computed when the turn is answered: ``reset_in`` seconds
  from now, or ``resets_at`` (epoch seconds). ``status`` is ``rejected`` (the default),
  ``allowed`` or ``allowed_warning``; ``claim`` ``five_hour``, ``seven_day``,
  ``seven_day_opus`` or ``seven_day_sonnet``; ``utilization``, ``overage_status``,
  ``overage_disabled_reason`` and ``retry_after: false`` adjust the details. Claude Code reads
  them only on the subscriber path (``offline_claude_env(oauth=True)``): a rejected 429 then
  becomes a ``rate_limit_event`` and a usage-limit ``result``, with no retry. ``headers`` wins
  over generated ones of the same name.

``{cwd}`` in any string of a turn is replaced by the CLI's working directory (read from the
"Primary working directory" line of its environment notes), for runs whose directory is made at
run time.

Turn selection is stateless: the turn index is the number of model answers (``assistant``
messages) in the request. Retries therefore get the same turn, concurrent CLI runs can share one
server, and ``--resume`` continues the script where the first run stopped (a resume after a
turn that failed asks for that turn again). The only state is the per-turn request count behind
``error.times``, kept per conversation (script, session id, subagent). Past the end of the
script the server answers ``{"text": "done"}``.

Several named scripts may share one server; a conversation selects one by putting the marker
``[[script:NAME]]`` anywhere in its first user message, otherwise ``"default"`` is used. An
Agent-tool subagent is a conversation of its own, so a marker in the subagent's prompt scripts it.

Requests that are not the main conversation (auxiliary calls, ``count_tokens``, unknown
endpoints) get a quick generic answer, are not counted as turns, and are recorded separately in
:attr:`ScriptedModelServer.aux_requests`. :attr:`ScriptedModelServer.log` lists every request
with its headers, the script and turn it was answered from and the HTTP status it got. The
server accepts any credentials: the API-key path sends ``x-api-key``, the subscriber path
``Authorization: Bearer``.

Run standalone with ``python -m emdx.testing.model_server --script FILE.json [--port N]``.
"""

from __future__ import annotations

from emdx.testing.model_server.answers import unified_rate_limit_headers
from emdx.testing.model_server.scripts import (
    DEFAULT_SCRIPT,
    FINAL_TURN,
    OFFLINE_API_KEY,
    OFFLINE_OAUTH_TOKEN,
    offline_claude_env,
)
from emdx.testing.model_server.server import ScriptedModelServer

__all__ = [
    "DEFAULT_SCRIPT",
    "FINAL_TURN",
    "OFFLINE_API_KEY",
    "OFFLINE_OAUTH_TOKEN",
    "ScriptedModelServer",
    "offline_claude_env",
    "unified_rate_limit_headers",
]
