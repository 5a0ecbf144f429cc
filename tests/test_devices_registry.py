"""The registry of device kinds is the one place that maps kinds to code."""

from bridge import config as config_module
from bridge.config import DeviceConfig
from bridge.devices import registry


def test_every_configurable_kind_has_code_and_no_other():
    assert set(registry.KINDS) == set(config_module.DEVICE_KINDS)
    for name in registry.KINDS:
        factory = registry.kind_class(name)
        assert getattr(factory, "name", None) == name
        for method in ("apply", "run", "aclose", "setup", "extra_rows"):
            assert callable(getattr(factory, method, None)), (name, method)


def test_an_unknown_kind_is_refused_by_name():
    try:
        registry.kind_class("pager")
    except LookupError as exc:
        assert "pager" in str(exc) and "virtual" in str(exc)
    else:
        raise AssertionError("an unknown kind was accepted")


def test_devices_run_elsewhere_are_not_driven_here():
    here = DeviceConfig(id="a", kind="modem", account="x", options={"port": "/dev/ttyUSB0"})
    away = DeviceConfig(id="b", kind="android", account="x", options={"serial": "S", "standalone": True})
    assert registry.by_kind([here, away]) == {"modem": [here]}


def test_kinds_are_built_once_and_on_demand():
    class Host:
        config = config_module.Config()

    kinds = registry.Kinds(Host())  # type: ignore[arg-type]
    assert list(kinds) == []
    first, new = kinds.ensure("virtual")
    again, new_again = kinds.ensure("virtual")
    assert new and not new_again and first is again and kinds.get("modem") is None
    assert first.name == "virtual" and list(kinds) == [first]
