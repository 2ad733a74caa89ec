"""The setting an experiment runs in: a concept model and a weak supervisor, from flags or a file.

``simulate.py --set model.d=50 --set supervisor=noisy --set supervisor.eta=0.5`` and
``simulate.py --config FILE.toml`` build a :class:`Setting`; names are the fields of
:class:`~theory.model.ConceptModel` and of the supervisor classes. A TOML file holds the same::

    [model]
    d = 30
    K = 8
    alpha = [0.3, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1]
    sigma = 1.0

    [supervisor]
    name = "noisy"   # biased | noisy | misaligned | angled
    eta = 0.5

The file is read first, then each ``--set`` in order. Choosing a supervisor family starts from that
family's defaults. Every error names the parameter.
"""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

import numpy as np

from theory.model import Angled, Biased, ConceptModel, Misaligned, Noisy, Supervisor

__all__ = ["Setting", "SUPERVISORS", "SettingError", "parse_setting", "parse_value"]

SUPERVISORS = {cls.name: cls for cls in (Biased, Noisy, Misaligned, Angled)}
_TUPLE_FIELDS = {"alpha", "feature_scales"}  # sequences in TOML, tuples in the (hashable) config


class SettingError(ValueError):
    """A --set or --config entry that cannot be used; the message names the parameter."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Setting:
    """The concept model and weak supervisor every experiment reads (default: ``docs/theory.md`` §5)."""

    model: ConceptModel = ConceptModel.paper()  # the strong model's concepts, prior, noise and features
    supervisor: Supervisor = Biased(delta=1.0)  # the weak supervisor

    def as_dict(self) -> dict:
        """Plain values for the JSON record, in the names ``--set`` takes."""
        return {"model": dataclasses.asdict(self.model),
                "supervisor": {"name": self.supervisor.name, **dataclasses.asdict(self.supervisor)}}

    def describe(self) -> str:
        """A one-line description, e.g. for the summary's header."""
        m = self.model
        sup = ", ".join(f"{k}={v}" for k, v in dataclasses.asdict(self.supervisor).items())
        alpha = "uniform" if m.alpha is None else str(list(m.alpha))
        scales = "" if m.feature_scales is None else f", feature_scales={list(m.feature_scales)}"
        return (f"d={m.d}, K={m.K}, alpha={alpha}, k_star={m.k_star}, sigma={m.sigma}{scales}; "
                f"{self.supervisor.name} supervisor ({sup})")


def _fields(cls) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def parse_value(name: str, text: str):
    """``text`` as a TOML value (``50``, ``0.5``, ``[0.2, 0.8]``, ``"noisy"``); a bare word is a string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        if text.strip() and all(ch.isalnum() or ch in "_-" for ch in text.strip()):
            return text.strip()
        raise SettingError(f"{name}: cannot read the value {text!r} (a number, a [list] or a word)") from None


def _build(model_kw: dict, sup_name: str, sup_kw: dict) -> Setting:
    model_names, sup_cls = _fields(ConceptModel), SUPERVISORS[sup_name]
    for k in model_kw:
        if k not in model_names:
            raise SettingError(f"unknown parameter model.{k}; known: {', '.join('model.' + n for n in model_names)}")
    for k in sup_kw:
        if k not in _fields(sup_cls):
            others = [n for n, c in SUPERVISORS.items() if k in _fields(c)]
            hint = f" (a parameter of: {', '.join(others)})" if others else ""
            raise SettingError(f"supervisor.{k} is not a parameter of the {sup_name} supervisor, whose parameters "
                               f"are {', '.join('supervisor.' + n for n in _fields(sup_cls))}{hint}")
    model_kw = {k: tuple(v) if k in _TUPLE_FIELDS and isinstance(v, list) else v for k, v in model_kw.items()}
    try:
        model = ConceptModel(**model_kw)
    except (TypeError, ValueError) as error:
        raise SettingError(f"model: {error}") from None
    try:
        supervisor = sup_cls(**sup_kw)
        supervisor.weak(model, np.eye(model.K, model.d))  # e.g. j or K < d for the bias
    except (TypeError, ValueError) as error:
        raise SettingError(f"supervisor ({sup_name}): {error}") from None
    return Setting(model=model, supervisor=supervisor)


def parse_setting(overrides=(), config: Path | None = None) -> Setting:
    """The setting from a TOML file (optional) and ``key=value`` overrides, applied in order.

    Keys: ``model.<field>``, ``supervisor`` (a family name) and ``supervisor.<field>``.

    Raises:
      SettingError: naming the parameter, for an unknown key, a value of the wrong kind, or a value
        the model refuses (e.g. ``K > d``).
    """
    model_kw: dict = {}
    sup_name, sup_kw = Setting().supervisor.name, dataclasses.asdict(Setting().supervisor)
    entries: list[tuple[str, object]] = []
    if config is not None:
        try:
            data = tomllib.loads(Path(config).read_text())
        except (OSError, tomllib.TOMLDecodeError) as error:
            raise SettingError(f"--config {config}: {error}") from None
        for section, values in data.items():
            if section not in ("model", "supervisor") or not isinstance(values, dict):
                raise SettingError(f"--config {config}: unknown section [{section}]; use [model] and [supervisor]")
            values = dict(values)
            if section == "supervisor" and "name" in values:
                entries.append(("supervisor", values.pop("name")))
            entries += [(f"{section}.{k}", v) for k, v in values.items()]
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep:
            raise SettingError(f"--set {item!r}: expected NAME=VALUE, e.g. model.d=50")
        entries.append((key.strip(), parse_value(key.strip(), text)))
    for key, value in entries:
        if key == "supervisor":
            if value not in SUPERVISORS:
                raise SettingError(f"supervisor={value!r}: choose one of {', '.join(SUPERVISORS)}")
            if value != sup_name:  # a new family starts from its defaults
                sup_name, sup_kw = value, {}
        elif key.startswith("model."):
            model_kw[key[len("model."):]] = value
        elif key.startswith("supervisor."):
            sup_kw[key[len("supervisor."):]] = value
        else:
            raise SettingError(f"unknown parameter {key!r}; use model.<field>, supervisor or supervisor.<field>")
    return _build(model_kw, sup_name, sup_kw)
