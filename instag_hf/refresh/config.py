"""The YAML file ``instag refresh`` reads: source datasets, target repos and their settings.

    defaults:                       # optional; merged into every target (a target's own keys win)
      n: 6000
      strategy: instag
      seed: 0
      normalizer: {min_frequency: 20}
    targets:
      - repo: my-org/sharegpt-instag-6k           # Hub dataset repo to keep up to date
        source: my-org/sharegpt-pool              # Hub id, local folder or data file...
        api_key_env: VLLM_KEY                     # the endpoint's key is in $VLLM_KEY
        model: meta-llama/Llama-3.1-8B-Instruct   # the server lists several
      - repo: my-org/alpaca-instag-1k
        source:                                   # ...or a mapping
          id: ./data/alpaca.parquet
          split: train
          format: alpaca
        n: 1000
        create_pr: true

Every value is checked when the file is read, so a bad file fails before any work starts.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from instag_hf.errors import ConfigurationError
from instag_hf.normalization.config import NormalizerConfig
from instag_hf.sampling.sampler import SamplingRequest
from instag_hf.tagging.prompts import PromptTemplate
from instag_hf.tagging.rows import FORMAT_NAMES
from instag_hf.tagging.settings import TaggerSettings, public_name, settings_from


@dataclass(frozen=True)
class SourceConfig:
    """Where a target's rows come from.

    Args:
        id: Hub dataset id, local folder or data file (see :mod:`instag_hf.dataset_io`).
        revision: Branch, tag or commit of a Hub source (default: its main branch).
        split: Split to read (default ``train``, or the only split).
        format: Row format (``sharegpt``, ``messages``, ``alpaca``, ``prompt``); detected if unset.
        column: Column holding the queries; detected if unset.
    """

    id: str
    revision: str | None = None
    split: str | None = None
    format: str | None = None
    column: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not self.id.strip():
            raise ConfigurationError(f"source id must be a Hub id, folder or file, got {self.id!r}")
        for name in ("revision", "split", "column"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value):
                raise ConfigurationError(f"source {name} must be a non-empty string, got {value!r}")
        if self.format is not None and self.format not in FORMAT_NAMES:
            raise ConfigurationError(f"source format must be one of {', '.join(FORMAT_NAMES)}, got {self.format!r}")


@dataclass(frozen=True)
class TargetConfig:
    """One target repo and how it is built from its source.

    Args:
        repo: Hub dataset repo id that receives the subset.
        source: The :class:`SourceConfig`.
        n: Rows to select.
        strategy, seed, target_coverage, target_mean_tags: As :func:`instag_hf.sample`.
        tagger: The tagging settings, by the names users write: every key of
            :data:`TAGGER_KEYS` (``endpoint``, ``model``, ``server``, ``provider``,
            ``api_key_env``, ``template``, ``max_new_tokens``, ...), each meaning what the
            :class:`~instag_hf.Tagger` keyword of that name means; in the file they sit in
            the target itself, beside ``n``. ``format`` and ``column`` come from the source.
        normalizer: :class:`~instag_hf.TagNormalizer` settings, e.g. ``{min_frequency: 20}``.
        private: Create the repo private.
        create_pr: Open a pull request instead of committing to ``main``.
        card_template: A card template file instead of the packaged one (a copy of
            ``dataset_cards/instag_subset.md.jinja``, edited), relative to the folder the job
            runs in. Its content is part of the settings: editing it rebuilds the card.
    """

    repo: str
    source: SourceConfig
    n: int
    strategy: str = "instag"
    seed: int | None = None
    target_coverage: float | None = None
    target_mean_tags: float | None = None
    tagger: Mapping[str, Any] = field(default_factory=dict)
    normalizer: dict[str, Any] = field(default_factory=dict)
    private: bool = False
    create_pr: bool = False
    card_template: str | None = None

    def __post_init__(self) -> None:
        from huggingface_hub.errors import HFValidationError
        from huggingface_hub.utils import validate_repo_id

        try:
            validate_repo_id(self.repo)
        except (HFValidationError, TypeError) as error:
            raise ConfigurationError(f"repo {self.repo!r} is not a Hub repo id: {error}") from None
        SamplingRequest(self.n, self.strategy, self.seed, "instag_tags", self.target_coverage, self.target_mean_tags)
        if not isinstance(self.normalizer, Mapping):
            raise ConfigurationError(f"normalizer must be a mapping of settings, got {self.normalizer!r}")
        NormalizerConfig.from_dict(dict(self.normalizer))
        for name in ("private", "create_pr"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigurationError(f"{name} must be true or false, got {getattr(self, name)!r}")
        if not isinstance(self.tagger, Mapping):
            raise ConfigurationError(f"tagger must be a mapping of tagging settings, got {self.tagger!r}")
        _reject_unknown(self.tagger, set(TAGGER_KEYS), "the tagging settings")
        # What a Tagger accepts is the Tagger's to say (types, URLs, server kind, model and
        # provider, the key's variable, the template): checked now, before any work.
        self.tagger_settings()
        if self.card_template is not None:
            _template_digest(self.card_template)  # a missing file fails now, not after tagging

    def tagger_settings(self) -> TaggerSettings:
        """The settings of the Tagger that tags this target's source.

        Raises:
            ConfigurationError: A tagging setting is invalid.
        """
        try:
            return settings_from({**self.tagger, "format": self.source.format, "column": self.source.column})
        except TypeError as error:  # a value of the wrong type that a check compared
            raise ConfigurationError(f"Invalid tagging setting: {error}") from None

    @property
    def endpoint(self) -> str | None:
        """The ``endpoint`` key as written, None when the target reads ``INSTAG_ENDPOINT``."""
        return self.tagger.get("endpoint")

    def settings(self) -> dict[str, Any]:
        """Everything that decides the target's content, apart from the source's revision.

        Of the tagging settings, those that decide the tags (``output`` in
        :class:`~instag_hf.tagging.settings.TaggerSettings`): not the endpoint URL, where its
        key is read from, nor the repo's visibility, since moving the server, rotating a key
        or making the repo private changes no row. A tagging setting at its default is left
        out (but for ``template`` and ``max_new_tokens``, hashed since the first configs),
        so configs written before a setting existed keep their hash.
        """
        values = asdict(self)
        for name in ("repo", "private", "create_pr", "tagger"):
            values.pop(name)
        if self.card_template is None:
            values.pop("card_template")
        else:
            values["card_template"] = _template_digest(self.card_template)
        values.update(_hashed_tagging(self.tagger_settings()))
        values["normalizer"] = NormalizerConfig.from_dict(dict(self.normalizer)).to_dict()
        return values

    def settings_hash(self) -> str:
        text = json.dumps(self.settings(), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class RefreshConfig:
    """The targets of one config file, in file order."""

    targets: tuple[TargetConfig, ...]

    def __post_init__(self) -> None:
        if not self.targets:
            raise ConfigurationError("The refresh config lists no targets.")
        repos = [t.repo for t in self.targets]
        doubles = sorted({r for r in repos if repos.count(r) > 1})
        if doubles:
            raise ConfigurationError(f"The refresh config lists these repos more than once: {doubles}")

    @classmethod
    def from_dict(cls, data: Any) -> RefreshConfig:
        """Build from the parsed YAML document.

        Raises:
            ConfigurationError: A key is unknown, missing or has a bad value.
        """
        if not isinstance(data, Mapping):
            raise ConfigurationError("The refresh config must be a mapping with a 'targets' list.")
        _reject_unknown(data, {"defaults", "targets"}, "the top level")
        defaults = data.get("defaults") or {}
        targets = data.get("targets")
        if not isinstance(defaults, Mapping):
            raise ConfigurationError("'defaults' must be a mapping of target settings.")
        if not isinstance(targets, list):
            raise ConfigurationError("'targets' must be a list of targets, each with 'repo' and 'source'.")
        return cls(tuple(_target({**defaults, **t} if isinstance(t, Mapping) else t, i) for i, t in enumerate(targets)))


def load_config(path: str | os.PathLike[str]) -> RefreshConfig:
    """Read and check a refresh config file.

    Raises:
        ConfigurationError: The file is missing, not YAML, or not a valid config; the
            message names the file.
    """
    import yaml

    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigurationError(f"Cannot read the refresh config {str(path)!r}: {error}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        where = getattr(error, "problem_mark", None)
        line = f" (line {where.line + 1})" if where is not None else ""
        raise ConfigurationError(f"{str(path)!r} is not valid YAML{line}: {getattr(error, 'problem', error)}") from None
    try:
        return RefreshConfig.from_dict(data)
    except ConfigurationError as error:
        raise ConfigurationError(f"{str(path)!r}: {error}") from None


#: The tagging keys a target may hold: the TaggerSettings fields marked ``config``.
TAGGER_KEYS = tuple(public_name(f) for f in fields(TaggerSettings) if f.metadata["config"])
#: Hashed even at their default: the first configs' hashes had them.
_ALWAYS_HASHED = ("template", "max_new_tokens")
_TARGET_KEYS = ({f.name for f in fields(TargetConfig)} - {"tagger"}) | set(TAGGER_KEYS)


def _hashed_tagging(settings: TaggerSettings) -> dict[str, Any]:
    out = {}
    for setting in fields(TaggerSettings):
        name = public_name(setting)
        if name not in TAGGER_KEYS or not setting.metadata["decides_output"]:
            continue
        value = getattr(settings, setting.name)
        default = setting.default if setting.default_factory is MISSING else setting.default_factory()
        if name in _ALWAYS_HASHED or value != default:
            out[name] = value.sha256 if isinstance(value, PromptTemplate) else value
    return out


_SOURCE_KEYS = {f.name for f in fields(SourceConfig)}


def _target(raw: Any, index: int) -> TargetConfig:
    where = f"target {index + 1}"
    if not isinstance(raw, Mapping):
        raise ConfigurationError(f"{where} must be a mapping with 'repo' and 'source'.")
    _reject_unknown(raw, _TARGET_KEYS, where)
    for key in ("repo", "source", "n"):
        if key not in raw:
            raise ConfigurationError(f"{where} has no '{key}'.")
    source = raw["source"]
    if isinstance(source, str):
        source = {"id": source}
    if not isinstance(source, Mapping):
        raise ConfigurationError(f"{where}: 'source' must be a dataset id/path or a mapping with 'id'.")
    _reject_unknown(source, _SOURCE_KEYS, f"{where} source")
    try:
        tagging = {key: raw[key] for key in TAGGER_KEYS if key in raw}
        rest = {key: value for key, value in raw.items() if key not in tagging}
        return TargetConfig(**{**rest, "source": SourceConfig(**source), "tagger": tagging})
    except TypeError as error:  # a missing 'id' in the source mapping
        raise ConfigurationError(f"{where}: {error}") from None
    except ConfigurationError as error:
        raise ConfigurationError(f"{where} ({raw.get('repo')}): {error}") from None


def _template_digest(path: Any) -> str:
    if not isinstance(path, str) or not path.strip():
        raise ConfigurationError(f"card_template must be the path of a template file, got {path!r}")
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError as error:
        raise ConfigurationError(
            f"card_template {path!r} cannot be read ({error.strerror or error}); paths are relative "
            "to the folder the refresh runs in"
        ) from None


def _reject_unknown(data: Mapping[str, Any], known: set[str], where: str) -> None:
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigurationError(f"Unknown key(s) {unknown} in {where}; known keys: {sorted(known)}")
