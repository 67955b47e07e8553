"""The Masker on its own: which values are secrets, the variants, cuts, the fast path, and the
places that use it directly (the stream parser, the log writer, the masking stderr)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from emdx.agent.stream import parse_line
from emdx.masking import Masker, MaskingStream, secret_values
from emdx.runlog import LogWriter, read_entries

SECRET = 'sk"a\\b/c-pä🔑-0123456789'


def test_secret_values_from_names_and_urls() -> None:
    env = {
        "ANTHROPIC_API_KEY": "sk-ant-0123456789",
        "GITHUB_TOKEN": "ghp_0123456789",
        "DB_PASSWD": "hunter2hunter2",
        "HTTP_AUTHORIZATION": "Bearer abcdefgh",
        "SESSION_COOKIE": "c00kie-value",
        "MY_PRIVATE_THING": "private-value",
        "SHORT_KEY": "1234567",  # under 8 characters: too likely to be ordinary text
        "GIT_AUTHOR_NAME": "Ada Lovelace",  # AUTH in AUTHOR is no secret
        "MYSQL_PWD": "mysql-pwd-value",  # whole words: PWD, PASS, PW, PIN
        "SMTP_PASS": "smtp-pass-value",
        "PWD": "/home/ada/project",  # the shell's working directory
        "OLDPWD": "/home/ada",
        "BYPASS_CACHE": "yes-please-1",  # PASS only as a word
        "PATH": "/usr/bin:/bin",
        "EMDX_DATABASE_URL": "postgresql://emdx:pw@db.example/emdx",
        "MIRROR": "https://user:s3cr%40t-long-pass@mirror.example/simple",
        "SSH_PRIVATE_KEY": "-----BEGIN KEY-----\nAAAAB3NzaC1yc2EAAAADAQABAAABAQ\n-----END KEY-----",
    }
    values = set(secret_values(env))
    for expected in (
        "sk-ant-0123456789",
        "ghp_0123456789",
        "hunter2hunter2",
        "Bearer abcdefgh",
        "c00kie-value",
        "private-value",
        "mysql-pwd-value",
        "smtp-pass-value",
        "emdx:pw@",  # a short password only with its URL context
        "s3cr%40t-long-pass",
        "s3cr@t-long-pass",  # and percent-decoded, as a client library would print it
        "AAAAB3NzaC1yc2EAAAADAQABAAABAQ",  # each line of a multi-line value (stderr is by line)
    ):
        assert expected in values, expected
    for absent in ("1234567", "Ada Lovelace", "/usr/bin:/bin", "pw", "/home/ada/project",
                   "/home/ada", "yes-please-1"):  # fmt: skip
        assert absent not in values, absent


def test_every_variant_is_masked() -> None:
    masker = Masker([SECRET])
    for text in (
        SECRET,
        json.dumps(SECRET, ensure_ascii=False)[1:-1],
        json.dumps(SECRET)[1:-1],
        json.dumps(SECRET)[1:-1].replace("/", "\\/"),
        json.dumps(SECRET, ensure_ascii=False)[1:-1].replace("/", "\\/"),
    ):
        assert masker.mask(f"before {text} after") == "before *** after", text


def test_a_secret_containing_another_is_masked_whole() -> None:
    masker = Masker(["abcdefgh", "abcdefgh-and-more"])
    assert masker.mask("x abcdefgh-and-more y abcdefgh") == "x *** y ***"


def test_mask_obj_masks_keys_and_values_and_copies() -> None:
    masker = Masker([SECRET])
    event = {"type": "user", SECRET: [{"text": f"a {SECRET}", "n": 1, "ok": True}, None]}
    masked = masker.mask_obj(event)
    assert masked == {"type": "user", "***": [{"text": "a ***", "n": 1, "ok": True}, None]}
    assert SECRET in event, "the input was changed"


def test_mask_obj_walks_nesting_deeper_than_the_recursion_limit() -> None:
    masker = Masker([SECRET])
    deep: list[object] = [SECRET]
    for _ in range(50_000):
        deep = [deep]
    masked = masker.mask_obj(deep)
    for _ in range(50_000):
        masked = masked[0]
    assert masked == ["***"]


def test_mask_cut_never_leaves_a_prefix() -> None:
    masker = Masker(["sk-ant-0123456789"])
    # The clip falls inside the secret: masked first, so only *** is cut.
    text = "x" * 95 + "sk-ant-0123456789 tail"
    assert masker.mask_cut(text, 100) == "x" * 95 + "*** t"
    # Text that a line cap already cut: a tail that starts a secret (4+ chars) is masked.
    assert masker.mask_cut("output sk-ant-012", 100, cut=True) == "output ***"
    assert masker.mask_cut("output sk-a", 100, cut=True) == "output ***"
    assert masker.mask_cut("output sk-", 100, cut=True) == "output sk-"  # 3 characters
    # Not cut: the same text is ordinary output.
    assert masker.mask_cut("output sk-ant-012", 100) == "output sk-ant-012"
    # Clipped here: the clip may leave the start of a secret whose rest was never printed.
    assert masker.mask_cut("y" * 96 + "sk-ant-0", 100) == "y" * 96 + "***"


def test_mask_cut_of_a_json_escaped_tail_and_a_split_character() -> None:
    masker = Masker(['pä"ss-0123456789'])
    assert masker.mask_cut('text: p\\u00e4\\"ss-01', 100, cut=True) == "text: ***"
    # A cap that cut a UTF-8 sequence in two leaves U+FFFD after the prefix.
    cut = 'text: pä"ss-01'.encode() + "🔑".encode()[:2]
    assert masker.mask_cut(cut.decode("utf-8", "replace"), 100, cut=True) == "text: ***"


def test_might_contain() -> None:
    masker = Masker(["sk-ant-0123456789"])
    assert not masker.might_contain(b'{"type":"assistant","text":"hello"}')
    assert masker.might_contain(b'{"text":"sk-ant-0123456789"}')
    # An escape can spell any character: such a line is always looked at decoded.
    assert masker.might_contain(b'{"text":"\\u0073k-ant-0123456789"}')
    # `\/` only matters when a secret holds a `/`.
    assert not masker.might_contain(b'{"url":"http:\\/\\/example"}')
    assert Masker(["path/secret-0123"]).might_contain(b'{"t":"path\\/secret-0123"}')


def test_without_secrets_nothing_is_done() -> None:
    masker = Masker()
    assert not masker
    assert not masker.might_contain(b'{"text":"\\u0073"}')
    text = "any text"
    assert masker.mask(text) is text
    event = {"a": ["b"]}
    assert masker.mask_obj(event) is event
    assert masker.mask_cut("abcdef", 3) == "abc"
    line = b'{"type":"assistant","text":"\\u0073k"}'
    parsed = parse_line(line, masker)
    assert parsed is not None and not parsed.masked


def test_parse_line_masks_before_anyone_reads_the_event() -> None:
    masker = Masker([SECRET])
    line = json.dumps({"type": "system", "subtype": SECRET, "model": SECRET}).encode()
    event = parse_line(line, masker)
    assert event is not None and event.masked
    assert (event.subtype, event.data) == (
        "***",
        {"type": "system", "subtype": "***", "model": "***"},
    )
    # An unparsable line: masked, then cut to 2000 characters, the secret across the cut.
    raw = b"q" * 1990 + SECRET.encode() + b" not json"
    event = parse_line(raw, masker)
    assert event is not None and event.kind == "malformed"
    assert event.text == "q" * 1990 + "*** not js"


def test_log_writer_masks_what_callers_left_and_stays_valid_json(tmp_path: Path) -> None:
    masker = Masker([SECRET])
    path = tmp_path / "log.jsonl"
    writer = LogWriter(path, max_bytes=1 << 20, masker=masker)
    raw_json = json.dumps({"type": "assistant", "text": SECRET}, ensure_ascii=False).encode()
    writer.write("assistant", f"said {SECRET}", raw_json=raw_json)
    writer.write("runner", "plain", raw={"nested": [f"{SECRET}!"]})
    writer.close()
    data = path.read_bytes()
    for form in (SECRET, json.dumps(SECRET, ensure_ascii=False)[1:-1], json.dumps(SECRET)[1:-1]):
        assert form.encode() not in data
    entries = read_entries(path)
    assert len(entries) == len(data.splitlines()) == 2
    assert entries[0]["message"] == "said ***"
    assert entries[0]["raw"] == {"type": "assistant", "text": "***"}
    assert entries[1]["raw"] == {"nested": ["***!"]}


def test_masking_stream_sees_a_secret_written_in_pieces() -> None:
    target = io.StringIO()
    stream = MaskingStream(target, Masker([SECRET]))
    half = len(SECRET) // 2
    stream.write(f"RuntimeError: {SECRET[:half]}")
    stream.write(f"{SECRET[half:]}\nnext ")
    assert target.getvalue() == "RuntimeError: ***\n"
    stream.write(SECRET)
    stream.flush()
    assert target.getvalue() == "RuntimeError: ***\nnext ***"


@pytest.mark.parametrize("name", ["EMDX_DATABASE_URL", "PIP_INDEX_URL"])
def test_a_url_password_is_masked_in_context(name: str) -> None:
    masker = Masker.from_env({name: "postgresql://emdx:pw@db.example:5432/emdx"})
    text = "could not connect to postgresql://emdx:pw@db.example:5432/emdx"
    assert masker.mask(text) == "could not connect to postgresql://***db.example:5432/emdx"
    assert masker.mask("pw elsewhere") == "pw elsewhere"
