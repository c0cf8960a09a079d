import pytest

from moeisr.registry import Registry


def test_make_builds_with_overrides_and_suggests_names():
    reg = Registry("thing")

    @reg.register("adder", "official-adder")
    def adder(a, b=1):
        return a + b

    assert reg.make({"name": "adder", "args": {"a": 2}}) == 3
    assert reg.make({"name": "official-adder", "args": {"a": 2}}, args={"b": 5}) == 7
    with pytest.raises(KeyError, match="did you mean 'adder'"):
        reg.make({"name": "addr", "args": {"a": 1}})
    with pytest.raises(ValueError, match="'name'"):
        reg.make({"args": {}})
