"""`emdx exec resume` against the real Claude Code CLI, with the scripted model server playing the
model: the new run continues the first run's session (its history reaches the model) in the same
directory, and its row keeps only its own share of the session's cost."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
from control_helpers import Ctl
from testkit import use_offline_claude

from emdx.testing.model_server import ScriptedModelServer

pytestmark = pytest.mark.integration

SCRIPT = {
    "resume": [
        {"text": "first answer", "usage": {"input_tokens": 1000, "output_tokens": 40}},
        {"text": "second answer", "usage": {"input_tokens": 3000, "output_tokens": 70}},
        {"text": "third answer", "usage": {"input_tokens": 5000, "output_tokens": 90}},
    ]
}


def text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "\n".join(block.get("text", "") for block in content or [] if isinstance(block, dict))


def result_event(ctl: Ctl, execution_id: int) -> dict[str, Any]:
    log = ctl.ok("exec", "logs", str(execution_id), "--raw").stdout
    results = [e for e in map(json.loads, log.splitlines()) if e["type"] == "result"]
    assert len(results) == 1, log
    return dict(results[0]["raw"])


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    with ScriptedModelServer(scripts=SCRIPT) as srv:
        scratch = tmp_path / "claude-tmp"
        scratch.mkdir()
        home = os.environ["HOME"]
        use_offline_claude(monkeypatch, srv.url, tmp_path / "claude-config", home, scratch)
        # The real CLI is slower than the fake; heartbeats stay frequent, grace a bit longer.
        monkeypatch.setenv("EMDX_KILL_GRACE_SECONDS", "5")
        yield srv


def test_resume_continues_the_session_with_the_real_cli(
    ctl: Ctl, server: ScriptedModelServer
) -> None:
    doc = ctl.doc("[[script:resume]] first question", title="resume me")
    first_run = ctl.emdx("claude", "execute", str(doc), "--no-smart", timeout=120)
    assert first_run.code == 0, first_run.stdout + first_run.stderr
    first_id = int(re.findall(r"execution #(\d+)", first_run.stderr)[0])
    first = ctl.get(first_id)
    assert (first.status.value, first.exit_code) == ("completed", 0)
    assert first.session_id
    requests_before = len(server.requests)

    started = ctl.emdx("exec", "resume", str(first_id), "second question")

    assert started.code == 0, started.stderr
    second_id = int(re.findall(r"execution #(\d+)", started.stdout)[0])
    assert second_id != first_id
    assert f"resumes session {first.session_id} of #{first_id}" in started.stdout
    second = ctl.wait_final(second_id, timeout=90)
    assert (second.status.value, second.exit_code, second.reason) == ("completed", 0, "success")
    shown = ctl.ok("exec", "show", str(second_id), "--json").json()
    assert shown["exec_type"] == "resume"
    assert shown["parent_execution_id"] == first_id
    assert shown["doc_id"] == doc
    assert shown["working_dir"] == first.working_dir
    assert shown["options"]["resume_session"] == first.session_id
    assert shown["options"]["resume_prompt"] == "second question"
    assert shown["session_id"] == first.session_id

    # The model saw the whole conversation: the first run's question and answer, then the new
    # prompt.
    assert len(server.requests) > requests_before
    last = server.requests[-1]["messages"]
    roles_texts = [(m.get("role"), text_of(m.get("content"))) for m in last]
    answered = [
        i for i, (r, t) in enumerate(roles_texts) if r == "assistant" and "first answer" in t
    ]
    asked = [i for i, (r, t) in enumerate(roles_texts) if r == "user" and "second question" in t]
    first_q = [i for i, (r, t) in enumerate(roles_texts) if r == "user" and "first question" in t]
    assert answered and asked and first_q, roles_texts
    assert first_q[0] < answered[0] < asked[-1]
    main_turns = [(e["script"], e["turn"]) for e in server.log if e["kind"] == "main"]
    assert main_turns == [("resume", 0), ("resume", 1)], server.log
    result_text = result_event(ctl, second_id)["result"]
    assert result_text == "second answer"

    # Cost: each row keeps its own share; the resumed session's result reports the total.
    first_total = result_event(ctl, first_id)["total_cost_usd"]
    session_total = result_event(ctl, second_id)["total_cost_usd"]
    assert first.cost_usd == pytest.approx(first_total)
    assert second.cost_usd is not None and first.cost_usd is not None
    assert 0 < second.cost_usd <= session_total + 1e-12
    assert first.cost_usd + second.cost_usd == pytest.approx(session_total, rel=1e-6)
    stats = ctl.ok("exec", "stats", "--json").json()
    assert stats["total_cost_usd"] == pytest.approx(session_total, rel=1e-6)


def test_resuming_the_same_run_twice_counts_each_cost_once(
    ctl: Ctl, server: ScriptedModelServer
) -> None:
    """Claude Code appends to the one session on every --resume and reports the session's total
    so far. Resuming run A a second time therefore continues after the first resume too, and that
    run's own share is the total minus everything recorded before it (not only A's cost)."""
    doc = ctl.doc("[[script:resume]] first question", title="resume twice")
    first_run = ctl.emdx("claude", "execute", str(doc), "--no-smart", timeout=120)
    assert first_run.code == 0, first_run.stdout + first_run.stderr
    first = int(re.findall(r"execution #(\d+)", first_run.stderr)[0])
    resumed = []
    for prompt in ("second question", "third question"):
        started = ctl.ok("exec", "resume", str(first), prompt)
        execution_id = int(re.findall(r"execution #(\d+)", started.stdout)[0])
        assert ctl.wait_final(execution_id, timeout=90).status.value == "completed"
        resumed.append(execution_id)
    # The second resume really continued the whole session, the first resume included.
    last = [(m.get("role"), text_of(m.get("content"))) for m in server.requests[-1]["messages"]]
    assert any(r == "assistant" and "second answer" in t for r, t in last), last

    ids = [first, *resumed]
    totals = [result_event(ctl, i)["total_cost_usd"] for i in ids]
    assert totals[0] < totals[1] < totals[2]
    costs = [ctl.get(i).cost_usd or 0.0 for i in ids]
    shares = [totals[0], totals[1] - totals[0], totals[2] - totals[1]]
    assert costs == pytest.approx(shares, rel=1e-6), (
        f"row costs {costs} vs the session's per-run costs {shares} (totals {totals})"
    )
    stats = ctl.ok("exec", "stats", "--json").json()
    assert stats["total_cost_usd"] == pytest.approx(totals[-1], rel=1e-6)
