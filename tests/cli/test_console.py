"""One error type per failure kind, each carrying its exit code, and one wrapper
(:func:`vocex.model.cli.console`) that every console script's ``main`` goes through."""

from __future__ import annotations

import importlib
import tomllib
from pathlib import Path

import pytest

from vocex.model.cli import console
from vocex.model.errors import (EXIT_DEVICE, EXIT_INPUT, EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_MODEL, EXIT_OUTPUT,
                                DeviceError, InputError, ModelError, OutputError, VocexError, raise_as)

ROOT = Path(__file__).resolve().parents[2]


def _scripts() -> dict[str, str]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]


@pytest.mark.parametrize("name", sorted(_scripts()))
def test_every_console_script_goes_through_the_wrapper(name):
    module, _, attr = _scripts()[name].partition(":")
    mod = importlib.import_module(module)
    main = mod.main  # vocex-live's entry point, cli(), is main() and then the exit
    assert getattr(main, "console_prog", None) == name, f"{name}: main is not wrapped by vocex.model.cli.console"
    assert callable(getattr(mod, attr))


def _classes():
    from vocex.model.audio import AudioError
    from vocex.model.backends import ModelError as BackendsModelError
    from vocex.model.card import CardError
    from vocex.train.corpus import CorpusError
    from vocex.train.data import DataError

    return {AudioError: (EXIT_INPUT, ValueError), DataError: (EXIT_INPUT, ValueError),
            CorpusError: (EXIT_INPUT, ValueError), InputError: (EXIT_INPUT, ValueError),
            BackendsModelError: (EXIT_MODEL, ValueError), CardError: (EXIT_MODEL, ValueError),
            OutputError: (EXIT_OUTPUT, OSError), DeviceError: (EXIT_DEVICE, RuntimeError)}


def test_each_error_class_carries_its_exit_code_and_keeps_its_builtin_base():
    for cls, (code, builtin) in _classes().items():
        assert issubclass(cls, VocexError) and issubclass(cls, builtin), cls
        assert cls.exit_code == code, cls
    assert VocexError.exit_code == EXIT_INTERNAL


def _run(body, capsys):
    main = console("vocex-test")(body)
    code = main([])
    return code, capsys.readouterr().err


@pytest.mark.parametrize("cls", [InputError, ModelError, OutputError, DeviceError])
def test_an_error_is_one_line_and_its_code(cls, capsys):
    def body(argv):
        raise cls("first part\n  and the rest")

    code, err = _run(body, capsys)
    assert code == cls.exit_code
    assert err == "vocex-test: error: first part and the rest\n"


def test_ctrl_c_is_130_with_what_the_command_adds(capsys):
    def plain(argv):
        raise KeyboardInterrupt

    def said(argv):
        raise KeyboardInterrupt("checkpoint saved")

    assert _run(plain, capsys) == (EXIT_INTERRUPTED, "vocex-test: interrupted\n")
    assert _run(said, capsys) == (EXIT_INTERRUPTED, "vocex-test: interrupted; checkpoint saved\n")


def test_a_bug_is_a_traceback_and_exit_1(capsys):
    def body(argv):
        return {}["missing"]

    code, err = _run(body, capsys)
    assert code == EXIT_INTERNAL
    assert "Traceback" in err and "KeyError" in err
    assert err.strip().splitlines()[-1].startswith("vocex-test: error: internal error (KeyError): a bug")


def test_the_status_and_argparse_exits_pass_through(capsys):
    assert _run(lambda argv: 0, capsys) == (0, "")
    assert _run(lambda argv: EXIT_INPUT, capsys) == (EXIT_INPUT, "")

    def usage(argv):
        raise SystemExit(2)

    with pytest.raises(SystemExit):
        _run(usage, capsys)


def test_raise_as_gives_a_generic_exception_its_kind():
    with pytest.raises(InputError, match="bad K"):
        with raise_as(InputError, ValueError):
            raise ValueError("bad K")
    with pytest.raises(OutputError, match="cannot write x: No space"):
        with raise_as(OutputError, OSError, message=lambda exc: f"cannot write x: {exc.strerror}"):
            raise OSError(28, "No space left on device")
    with pytest.raises(ModelError):  # a vocex error keeps its own kind (a ValueError too)
        with raise_as(InputError, ValueError):
            raise ModelError("truncated")
    with pytest.raises(KeyError):  # what it was not asked to catch goes on
        with raise_as(InputError, ValueError):
            raise KeyError("x")
