"""Settings, defined once: flag > environment > $PYRITE_HOME/config.yaml > default."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Callable

import yaml

from pyrite.errors import ConfigError
from pyrite.secrets import check_secret

PROVIDERS = ("local", "openai", "gemini", "hash", "none")
DEFAULT_MODELS = {
    "local": "all-MiniLM-L6-v2",
    "openai": "text-embedding-3-small",
    "gemini": "gemini-embedding-001",
    "hash": "hash-384",
    "none": "",
}


def _positive_int(value: Any) -> int:
    number = int(value)
    if number < 1:
        raise ValueError("must be at least 1")
    return number


def _positive_float(value: Any) -> float:
    number = float(value)
    if not number > 0:
        raise ValueError("must be greater than 0")
    return number


def _optional_int(value: Any) -> int | None:
    return None if value in (None, "") else _positive_int(value)


def _names(value: Any) -> tuple[str, ...]:
    """A list from YAML, or a comma-separated string from the environment."""
    items = value if isinstance(value, (list, tuple)) else str(value).split(",")
    names = tuple(str(item).strip() for item in items if str(item).strip())
    for name in names:
        if any(ch.isspace() or not ch.isprintable() for ch in name):
            raise ValueError(f"{name!r} has spaces or control characters")
    return names


def _hosts(value: Any) -> tuple[str, ...]:
    names = _names(value)
    for name in names:
        if "*" in name[1:] or (name.startswith("*") and name != "*" and not name.startswith("*.")):
            raise ValueError(f"{name!r}: a wildcard must be '*' or lead like '*.example.com'")
    return tuple(name.lower() for name in names)


def _provider(value: Any) -> str:
    text = str(value).strip().lower()
    if text not in PROVIDERS:
        raise ValueError(f"must be one of {', '.join(PROVIDERS)}")
    return text


KB_NAMES = ("title", "slug")


def _kb_names(value: Any) -> str:
    text = str(value).strip().lower()
    if text not in KB_NAMES:
        raise ValueError(f"must be one of {', '.join(KB_NAMES)}")
    return text


@dataclass(frozen=True)
class Setting:
    """One setting: its config key, environment variable, default, parser and help."""

    key: str
    env: str
    default: Any
    parse: Callable[[Any], Any]
    help: str
    secret: bool = False


SETTINGS: tuple[Setting, ...] = (
    Setting("embed_provider", "PYRITE_EMBED_PROVIDER", "local", _provider,
            "embedding provider: local, openai, gemini, hash (deterministic, for tests) or none"),
    Setting("embed_model", "PYRITE_EMBED_MODEL", None, lambda v: str(v) if v else None,
            "embedding model (default: the provider's)"),
    Setting("embed_url", "PYRITE_EMBED_URL", None, lambda v: str(v).rstrip("/") if v else None,
            "base URL of a remote provider (default: the provider's)"),
    Setting("embed_api_key", "PYRITE_EMBED_API_KEY", None, check_secret,
            "API key of a remote provider", secret=True),
    Setting("embed_dimensions", "PYRITE_EMBED_DIMENSIONS", None, _optional_int,
            "vector size to ask a remote provider for (default: the model's)"),
    Setting("embed_batch_size", "PYRITE_EMBED_BATCH_SIZE", 10, _positive_int,
            "entries claimed and embedded per batch"),
    Setting("embed_max_attempts", "PYRITE_EMBED_MAX_ATTEMPTS", 3, _positive_int,
            "attempts before an entry is marked failed"),
    Setting("embed_retry_base", "PYRITE_EMBED_RETRY_BASE", 10.0, _positive_float,
            "first retry delay in seconds (doubles per attempt, with jitter)"),
    Setting("embed_retry_max", "PYRITE_EMBED_RETRY_MAX", 300.0, _positive_float,
            "longest retry delay in seconds"),
    Setting("embed_lease", "PYRITE_EMBED_LEASE", 60.0, _positive_float,
            "seconds a claimed batch stays reserved without a heartbeat"),
    Setting("embed_timeout", "PYRITE_EMBED_TIMEOUT", 60.0, _positive_float,
            "connect and read timeout of remote providers, seconds"),
    Setting("embed_concurrency", "PYRITE_EMBED_CONCURRENCY", None, _optional_int,
            "batches in flight per worker (default 1 local, 4 remote)"),
    Setting("vector_index_min", "PYRITE_VECTOR_INDEX_MIN", 20_000, _positive_int,
            "vectors a KB needs before semantic search scans only the nearest cells, not all vectors"),
    Setting("search_timeout", "PYRITE_SEARCH_TIMEOUT", 5.0, _positive_float,
            "longest a search may take, seconds, waiting for a turn included (the server then answers 503)"),
    Setting("kb_names", "PYRITE_KB_NAMES", "title", _kb_names,
            "how new KBs name the files of new entries: title ('Core plugins.md') or slug ('core-plugins.md')"),
    Setting("max_body_bytes", "PYRITE_MAX_BODY", 10 * 1024 * 1024, _positive_int,
            "largest request body the server accepts, bytes"),
    Setting("allowed_hosts", "PYRITE_ALLOWED_HOSTS", (), _hosts,
            "Host names the server answers besides loopback ones (comma-separated; '*.example.com' wildcards)"),
    Setting("allowed_origins", "PYRITE_ALLOWED_ORIGINS", (), _names,
            "web origins (scheme://host[:port]) whose pages may call the server, besides its own"),
    Setting("api_token", "PYRITE_API_TOKEN", None, check_secret,
            "bearer token the server requires when not on loopback", secret=True),
)
_BY_KEY = {s.key: s for s in SETTINGS}


@dataclass(frozen=True)
class Settings:
    """Resolved settings of one process (made by load_settings; each default is SETTINGS's)."""

    home: Path
    embed_provider: str
    embed_model: str | None
    embed_url: str | None
    embed_api_key: str | None
    embed_dimensions: int | None
    embed_batch_size: int
    embed_max_attempts: int
    embed_retry_base: float
    embed_retry_max: float
    embed_lease: float
    embed_timeout: float
    embed_concurrency: int | None
    vector_index_min: int
    search_timeout: float
    kb_names: str
    max_body_bytes: int
    allowed_hosts: tuple[str, ...]
    allowed_origins: tuple[str, ...]
    api_token: str | None = field(repr=False)

    @property
    def db_path(self) -> Path:
        return self.home / "index.db"

    @property
    def config_path(self) -> Path:
        return self.home / "config.yaml"

    @property
    def kbs_dir(self) -> Path:
        return self.home / "kbs"

    @property
    def model(self) -> str:
        """The configured model name, or the provider's default."""
        return self.embed_model or DEFAULT_MODELS[self.embed_provider]

    @property
    def model_id(self) -> str:
        """The vector space's name: provider, model and any requested dimension."""
        if self.embed_provider == "none":
            return ""
        suffix = f"@{self.embed_dimensions}" if self.embed_dimensions else ""
        return f"{self.embed_provider}:{self.model}{suffix}"

    @property
    def concurrency(self) -> int:
        if self.embed_concurrency:
            return self.embed_concurrency
        return 4 if self.embed_provider in ("openai", "gemini") else 1

    def with_overrides(self, **overrides: Any) -> "Settings":
        """A copy with the given (already parsed) values; None means keep."""
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})

    def public_dict(self) -> dict[str, Any]:
        """Every setting with secrets masked: safe to print or log."""
        out: dict[str, Any] = {"home": str(self.home)}
        for f in fields(self):
            if f.name == "home":
                continue
            value = getattr(self, f.name)
            if _BY_KEY[f.name].secret and value:
                value = "***"
            out[f.name] = value
        return out


def default_home() -> Path:
    """$PYRITE_HOME, else ~/.pyrite."""
    return Path(os.environ.get("PYRITE_HOME") or Path.home() / ".pyrite").expanduser()


def read_config_file(path: Path) -> dict[str, Any]:
    """The mapping in config.yaml, or {} when the file does not exist."""
    if not path.exists():
        return {}
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of setting: value")
    unknown = sorted(set(data) - set(_BY_KEY))
    if unknown:
        raise ConfigError(f"{path}: unknown setting(s) {', '.join(unknown)}; known: {', '.join(_BY_KEY)}")
    return data


def load_settings(home: Path | None = None, **flags: Any) -> Settings:
    """Resolve every setting: flag (non-None keyword) > environment > config.yaml > default."""
    home = (home or default_home()).expanduser().resolve()
    from_file = read_config_file(home / "config.yaml")
    values: dict[str, Any] = {}
    for setting in SETTINGS:
        if flags.get(setting.key) is not None:
            raw, source = flags[setting.key], "flag"
        elif os.environ.get(setting.env) not in (None, ""):
            raw, source = os.environ[setting.env], setting.env
        elif setting.key in from_file:
            raw, source = from_file[setting.key], "config.yaml"
        else:
            values[setting.key] = setting.default
            continue
        try:
            values[setting.key] = setting.parse(raw)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"invalid {setting.key} from {source}: {exc}") from None
    return Settings(home=home, **values)


def write_default_config(path: Path) -> bool:
    """Write a commented config.yaml listing every setting; False if one exists."""
    if path.exists():
        return False
    lines = ["# pyrite settings: flag > environment > this file > default.", ""]
    for s in SETTINGS:
        lines.append(f"# {s.help} (env {s.env})")
        lines.append(f"# {s.key}: {'' if s.default in (None, ()) else s.default}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return True
