"""The setting from ``--set`` and ``--config``: names as in the code, errors that name the parameter."""

import pytest

from theory.model import Biased, ConceptModel, Misaligned, Noisy
from theory.setting import Setting, SettingError, parse_setting, parse_value


def test_default_setting_is_the_paper_setting():
    s = parse_setting()
    assert s == Setting() and s.model == ConceptModel.paper() and s.supervisor == Biased(delta=1.0)


def test_set_overrides_model_and_supervisor_in_order():
    s = parse_setting(["model.d=50", "model.K=10", "supervisor=noisy", "supervisor.eta=0.5", "model.sigma=1"])
    assert s.model == ConceptModel(d=50, K=10, sigma=1.0) and s.supervisor == Noisy(eta=0.5)
    s = parse_setting(["model.alpha=[0.5, 0.25, 0.25]", "model.K=3", "model.d=6", "supervisor=misaligned",
                       "supervisor.j=2", "supervisor.gamma=0.4"])
    assert s.model.alpha == (0.5, 0.25, 0.25) and s.supervisor == Misaligned(gamma=0.4, j=2)
    # choosing a family starts from its defaults; naming the current one keeps what was set
    assert parse_setting(["supervisor.delta=2", "supervisor=biased"]).supervisor == Biased(delta=2.0)
    assert parse_setting(["supervisor.delta=2", "supervisor=noisy"]).supervisor == Noisy()


def test_config_file_then_set(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text('[model]\nd = 30\nK = 8\nsigma = 1.0\nfeature_scales = ' + str([1.0] * 29 + [2.0]) +
                    '\n[supervisor]\nname = "misaligned"\ngamma = 0.3\ndelta = 0.5\n')
    s = parse_setting(["supervisor.gamma=0.2"], path)
    assert s.model.d == 30 and s.model.feature_scales[-1] == 2.0
    assert s.supervisor == Misaligned(gamma=0.2, delta=0.5)
    assert s.as_dict()["supervisor"] == {"name": "misaligned", "gamma": 0.2, "delta": 0.5, "j": 1}


@pytest.mark.parametrize("overrides,fragment", [
    (["model.dd=5"], "unknown parameter model.dd"),
    (["supervisor.eta=0.5"], "supervisor.eta is not a parameter of the biased supervisor"),
    (["supervisor=noisy", "supervisor.delta=1"], "(a parameter of: biased, misaligned, angled)"),
    (["supervisor=clever"], "supervisor='clever'"),
    (["model.K=30"], "K=30"),
    (["model.d=6.5"], "d=6.5"),
    (["model.alpha=[0.5,0.5]"], "alpha has 2 entries but K=5"),
    (["model.sigma=-1"], "sigma=-1"),
    (["model.sigma=abc"], "sigma='abc'"),
    (["supervisor.delta=-0.5"], "delta=-0.5"),
    (["supervisor=misaligned", "supervisor.j=0"], "j=0"),
    (["supervisor=misaligned", "supervisor.gamma=2"], "gamma=2"),
    (["model.K=20"], "K < d"),
    (["model.d"], "expected NAME=VALUE"),
    (["d=5"], "unknown parameter 'd'"),
    (["model.alpha=[0.5,"], "model.alpha: cannot read the value"),
])
def test_bad_settings_name_the_parameter(overrides, fragment):
    with pytest.raises(SettingError) as info:
        parse_setting(overrides)
    assert fragment in str(info.value), str(info.value)


def test_bad_config_file(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("[modle]\nd = 3\n")
    with pytest.raises(SettingError, match=r"unknown section \[modle\]"):
        parse_setting(config=path)
    with pytest.raises(SettingError, match="--config"):
        parse_setting(config=tmp_path / "missing.toml")


def test_parse_value():
    assert parse_value("x", "50") == 50 and parse_value("x", "0.5") == 0.5
    assert parse_value("x", "[1, 2.5]") == [1, 2.5] and parse_value("x", "noisy") == "noisy"
    assert parse_value("x", '"a b"') == "a b"
