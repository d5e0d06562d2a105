"""Deployment config: what a dispatcher edits, and the errors they get when it is wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from atmguard.core.errors import ConfigError
from atmguard.notifier.config import DeploymentConfigError, load_deployment, parse_deployment

from .conftest import CONFIGS, DAY, NIGHT


def test_shipped_deployment_has_zhezkazgan_atms_and_valid_routing(deployment):
    ids = [a.id for a in deployment.atms]
    assert ids[0] == "atm-zhez-001" and all(i.startswith("atm-zhez-") for i in ids)
    atm = deployment.atm("atm-zhez-001")
    assert atm is not None and atm.district == "center" and "Алашахана" in atm.address
    assert 47.7 < atm.lat < 47.9 and 67.5 < atm.lon < 67.8
    assert {"patrol", "dispatch", "supervisor"} <= set(deployment.groups)
    assert deployment.radio["dispatch"].phone.startswith("+7")
    assert deployment.escalation.steps[0].after == 120.0


def test_routing_by_atm_district_and_shift(deployment):
    center = deployment.atm("atm-zhez-001")
    north = deployment.atm("atm-zhez-004")
    kengir = deployment.atm("atm-zhez-007")
    assert deployment.shift_at(DAY) == "day" and deployment.shift_at(NIGHT) == "night"
    assert deployment.group_members("patrol", center, DAY) == ["ofc-nurlanov", "ofc-ivanova"]
    assert deployment.group_members("patrol", center, NIGHT) == ["ofc-seitkali"]
    assert deployment.group_members("patrol", north, DAY) == ["ofc-petrov"]
    assert deployment.group_members("patrol", kengir, NIGHT) == ["ofc-kim"]  # `any` shift
    assert deployment.group_members("patrol", None, DAY) == ["desk-zhez"]  # unknown ATM: the desk


def _error(text: str) -> DeploymentConfigError:
    with pytest.raises(DeploymentConfigError) as info:
        parse_deployment(text, "configs/deployment.yaml")
    return info.value


def _line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), start=1) if needle in line)


def test_bad_phone_number_names_file_line_and_field():
    text = (CONFIGS / "deployment.yaml").read_text(encoding="utf-8").replace('"+77015550103"', '"8 701 555 01 03"')
    err = _error(text)
    assert isinstance(err, ConfigError)
    assert err.line == _line_of(text, "8 701 555 01 03")
    assert err.field == "people.ofc-seitkali.phone"
    message = str(err)
    assert message.startswith(f"configs/deployment.yaml:{err.line}: people.ofc-seitkali.phone: ")
    assert "E.164" in message and "+77015550101" in message  # says what is expected


def test_number_invalid_for_its_country_is_rejected():
    text = (CONFIGS / "deployment.yaml").read_text(encoding="utf-8").replace('"+77102000911"', '"+7710200"')
    err = _error(text)
    assert err.field == "radio.dispatch.phone" and err.line == _line_of(text, '"+7710200"')


def test_unknown_person_and_unknown_field_are_located():
    base = (CONFIGS / "deployment.yaml").read_text(encoding="utf-8")
    text = base.replace("north:   {day: [ofc-petrov]", "north:   {day: [ofc-petrow]")
    err = _error(text)
    assert err.field == "groups.patrol.districts.north.day[0]" and "ofc-petrow" in err.message
    assert err.line == _line_of(text, "ofc-petrow")
    text = base.replace("  max_segments: 4", "  max_segment: 4")
    err = _error(text)
    assert err.field == "sms.max_segment" and "unknown field" in err.message


def test_escalation_must_name_known_groups(tmp_path: Path):
    text = (CONFIGS / "deployment.yaml").read_text(encoding="utf-8").replace("sms: [supervisor]", "sms: [supervisors]")
    (tmp_path / "deployment.yaml").write_text(text, encoding="utf-8")
    with pytest.raises(DeploymentConfigError) as info:
        load_deployment(tmp_path)
    assert info.value.field == "escalation.steps[1].sms[0]"
    assert str(info.value).startswith(f"{tmp_path / 'deployment.yaml'}:{_line_of(text, 'supervisors')}:")
    assert "supervisor" in info.value.message  # lists the known groups


def test_missing_file_is_a_config_error(tmp_path: Path):
    with pytest.raises(ConfigError, match="no deployment config"):
        load_deployment(tmp_path)


def test_a_value_below_its_key_and_a_missing_field_are_placed_at_the_key():
    base = (CONFIGS / "deployment.yaml").read_text(encoding="utf-8")
    block = "people:\n  ofc-zz:\n    name: Z\n    phone:\n      \"8 701 555 01 03\"\n"
    err = _error(base.replace("people:\n", block, 1))
    # the line of `phone:`, where a dispatcher looks; the message names no column
    assert (err.line, err.column, err.field) == (_line_of(base, "people:") + 3, None, "people.ofc-zz.phone")
    err = _error(base.replace("people:\n", "people:\n  ofc-zz:\n    name: Z\n", 1))
    assert (err.line, err.field) == (_line_of(base, "people:") + 1, "people.ofc-zz.phone")  # at `ofc-zz:`
    assert str(err) == f"configs/deployment.yaml:{err.line}: people.ofc-zz.phone: Field required"


def test_bad_yaml_names_its_line():
    err = _error("atms: [\n")
    assert (err.path, err.line, err.column) == ("configs/deployment.yaml", 2, None)
    assert str(err).startswith("configs/deployment.yaml:2: not valid YAML: ")
