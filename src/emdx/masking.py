"""Secrets: which environment values are secret, and masking them in every text emdx writes.

The agent inherits the caller's environment (API keys, tokens, database URLs) and can print any
of it. Whatever emdx keeps of its output — the run log, row fields, saved documents, the
supervisor's own stderr — goes through one `Masker` first, on decoded text, before anything is
cut or encoded (DESIGN §8).
"""

from __future__ import annotations

import base64
import io
import json
import re
from collections.abc import Iterable, Mapping
from typing import Any, TextIO
from urllib.parse import quote, quote_plus, unquote

MASK = "***"
MIN_SECRET_CHARS = 8
# A cut-off tail this long that starts a secret is treated as the secret: shorter ones are too
# likely to be ordinary text, and reveal too little to matter.
MIN_PREFIX_CHARS = 4
# Substrings of a variable's name that make its value a secret (compared upper-cased).
SECRET_MARKERS = (
    "KEY",
    "TOKEN",
    "SECRET",
    "PASSWORD",
    "PASSWD",
    "PASSPHRASE",
    "CREDENTIAL",
    "PRIVATE",
    "COOKIE",
    "AUTH",
)
# Whole words that make a value a secret (as substrings they are too common: BYPASS, the shell's
# PWD): MYSQL_PWD, SMTP_PASS, DB_PW.
SECRET_WORDS = frozenset({"PASS", "PWD", "PW", "PASSWD", "PIN"})
# "AUTH" also occurs in GIT_AUTHOR_NAME and friends, which are no secrets.
NOT_SECRET_WORDS = frozenset({"AUTHOR", "AUTHORS"})
_WORD = re.compile(r"[A-Z0-9]+")
# The authority of every `scheme://…` in a value, e.g. `u:pw@host:5432` in a database URL.
_URL_AUTHORITY = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://([^\s/?#]*)")
# JSON escapes that can spell a secret's characters in a form we do not list. A regular
# expression, not `in`: its literal-prefix scan is ~3x faster on the stream's hot path.
_UNICODE_ESCAPE = re.compile(rb"\\u")
_UNICODE_OR_SLASH_ESCAPE = re.compile(rb"\\[u/]")
_PENDING_MAX_CHARS = 64 * 1024


# emdx's own run marker: an identity, shown everywhere (it names the run's files).
NOT_SECRET_NAMES = frozenset({"EMDX_RUN_KEY", "PWD", "OLDPWD"})


def is_secret_name(name: str) -> bool:
    upper = name.upper()
    if upper in NOT_SECRET_NAMES:
        return False
    words = [w for w in _WORD.findall(upper) if w not in NOT_SECRET_WORDS]
    return any(
        word in SECRET_WORDS or any(marker in word for marker in SECRET_MARKERS) for word in words
    )


def url_passwords(value: str) -> list[tuple[str, str]]:
    """(user, password) of every URL with a password in its userinfo (`scheme://u:pw@host`)."""
    found = []
    for match in _URL_AUTHORITY.finditer(value):
        userinfo, at, _ = match.group(1).rpartition("@")
        user, colon, password = userinfo.partition(":")
        if at and colon and password:
            found.append((user, password))
    return found


def secret_values(env: Mapping[str, str]) -> list[str]:
    """The texts to mask: values of secret-looking variables (8+ characters), each line of a
    multi-line one, and the password of any URL in any variable (`EMDX_DATABASE_URL`)."""
    values: set[str] = set()
    for name, value in env.items():
        if is_secret_name(name) and len(value) >= MIN_SECRET_CHARS:
            values.add(value)
            # Output framed by line (stderr) never holds a multi-line value whole.
            values.update(
                line for line in value.splitlines() if len(line.strip()) >= MIN_SECRET_CHARS
            )
        for user, password in url_passwords(value):
            # A short password is masked with its URL context only, so that "pw" elsewhere
            # in the output survives.
            values.add(f"{user}:{password}@")
            for form in (password, unquote(password)):
                if len(form) >= MIN_SECRET_CHARS:
                    values.add(form)
    return sorted(values, key=len, reverse=True)


def variants(secret: str) -> set[str]:
    """The forms a secret takes in text emdx handles: as is, JSON-escaped (with and without
    non-ASCII escaped, and escaped twice: JSON text inside a JSON string, as secret managers
    print it), `/` as `\\/`, URL-encoded (`%2F`, `+` for spaces), base64 (alone, or with the
    newline `echo` adds); and as undecodable bytes read back with replacement."""
    once = {json.dumps(secret, ensure_ascii=False)[1:-1], json.dumps(secret)[1:-1]}
    twice = {json.dumps(form, ensure_ascii=False)[1:-1] for form in once}
    forms = {secret, *once, *twice}
    forms |= {form.replace("/", "\\/") for form in forms}
    raw = _encode(secret)
    forms |= {quote(raw, safe=""), quote_plus(raw, safe=""), quote(raw, safe="/")}
    for data in (raw, raw + b"\n"):
        encoded = base64.b64encode(data).decode()
        forms |= {encoded, encoded.rstrip("="), base64.urlsafe_b64encode(data).decode()}
    forms.add(raw.decode("utf-8", "replace"))
    return {form for form in forms if form}


def _encode(text: str) -> bytes:
    # Environment values that are not UTF-8 arrive as surrogate escapes (os.environ).
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass")


class Masker:
    """Replaces every variant of every secret with `***`. Without secrets every method is a
    no-op that returns its input, so the stream's hot path pays nothing."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        forms: set[str] = set()
        for secret in secrets:
            if secret:
                forms |= variants(secret)
        # Longest first: a secret that contains another is replaced whole.
        self.variants: tuple[str, ...] = tuple(sorted(forms, key=lambda f: (-len(f), f)))
        # What the gate looks for in an encoded line: each variant as it decodes, and as the
        # line's own JSON escaping writes it (a variant is looked for in decoded strings).
        gate = [*self.variants, *(json.dumps(form, ensure_ascii=False)[1:-1] for form in forms)]
        self._bytes = tuple(dict.fromkeys(_encode(form) for form in gate))
        # `\/` only hides a secret that holds a `/`.
        has_slash = any("/" in form for form in self.variants)
        self._escape = (_UNICODE_OR_SLASH_ESCAPE if has_slash else _UNICODE_ESCAPE).search
        self.longest = len(self.variants[0]) if self.variants else 0

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Masker:
        return cls(secret_values(env))

    def __bool__(self) -> bool:
        return bool(self.variants)

    def might_contain(self, raw_line: bytes) -> bool:
        """Whether the encoded line may hold a secret: it holds a variant, or an escape
        (`\\u…`, `\\/`) that can spell a secret's characters differently. False means that the
        line needs no masking at all."""
        if not self._bytes:
            return False
        if self.holds_variant(raw_line):
            return True
        return self._escape(raw_line) is not None

    def holds_variant(self, data: bytes) -> bool:
        """Whether the bytes hold a secret in one of its listed spellings."""
        return any(form in data for form in self._bytes)

    def mask(self, text: str) -> str:
        """Decoded text with every variant replaced by `***`."""
        for form in self.variants:
            if form in text:
                text = text.replace(form, MASK)
        return text

    def mask_obj(self, obj: Any) -> Any:
        """A copy of a parsed JSON value with every string, keys included, masked. Iterative:
        the parser accepts nesting deeper than Python's recursion limit allows to walk."""
        if not self.variants:
            return obj
        root: list[Any] = [None]
        stack: list[tuple[Any, Any, Any]] = [(root, 0, obj)]
        while stack:
            parent, slot, value = stack.pop()
            if isinstance(value, str):
                parent[slot] = self.mask(value)
            elif isinstance(value, dict):
                copy: dict[Any, Any] = {}
                parent[slot] = copy
                for key, item in value.items():
                    masked_key = self.mask(key) if isinstance(key, str) else key
                    copy[masked_key] = None
                    stack.append((copy, masked_key, item))
            elif isinstance(value, list | tuple):
                items: list[Any] = [None] * len(value)
                parent[slot] = items
                stack.extend((items, i, item) for i, item in enumerate(value))
            else:
                parent[slot] = value
        return root[0]

    def mask_cut(self, text: str, limit: int, cut: bool = False) -> str:
        """Mask, then clip to `limit` characters. A clipped text, or one that was already cut
        (`cut`: a line cap dropped the rest before we saw it), also loses a tail that starts a
        secret: the rest of that secret is not there to be recognised."""
        text = self.mask(text)
        if len(text) > limit:
            text, cut = text[:limit], True
        if cut and self.variants:
            text = self._mask_tail(text.rstrip("\ufffd"))
        return text

    def _mask_tail(self, text: str) -> str:
        start = len(text)
        for form in self.variants:
            head = form[:MIN_PREFIX_CHARS]
            if len(form) <= MIN_PREFIX_CHARS:
                continue
            window_start = max(0, len(text) - len(form) + 1)
            at = text.find(head, window_start)
            while at >= 0:
                if at < start and form.startswith(text[at:]):
                    start = at
                    break
                at = text.find(head, at + 1)
        return text if start == len(text) else text[:start] + MASK


class MaskingStream(io.TextIOBase):
    """A text stream that masks what it writes to `target`, whole lines at a time (a secret
    written in pieces is still seen whole). Installed as the supervisor's `sys.stderr`, which
    is `logs/<id>.runner.err`: tracebacks quote exception messages, which quote anything."""

    def __init__(self, target: TextIO, masker: Masker) -> None:
        super().__init__()
        self.target = target
        self.masker = masker
        self._pending = ""

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.target, "encoding", None) or "utf-8"

    @property
    def errors(self) -> str | None:  # type: ignore[override]
        return getattr(self.target, "errors", None)

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self.target.fileno()

    def isatty(self) -> bool:
        return self.target.isatty()

    def write(self, text: str) -> int:
        self._pending += text
        if "\n" in self._pending:
            complete, _, self._pending = self._pending.rpartition("\n")
            self.target.write(self.masker.mask(complete + "\n"))
            self.target.flush()
        if len(self._pending) > _PENDING_MAX_CHARS:
            self._write_pending()
        return len(text)

    def flush(self) -> None:
        self._write_pending()
        self.target.flush()

    def _write_pending(self) -> None:
        if self._pending:
            pending, self._pending = self._pending, ""
            self.target.write(self.masker.mask(pending))
