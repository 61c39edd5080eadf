"""Every command of the three command-line tools answers --help (and -h where declared)."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from mycelium.export.cli import main as export_main
from mycelium.runtime.cli import main as runtime_main
from mycelium.train.cli import main as train_main


def _commands(group: click.Command, path: tuple[str, ...] = ()):
    """(tool, argv) for the command itself and every subcommand, depth first."""
    yield group, path
    if isinstance(group, click.Group):
        for name, command in sorted(group.commands.items()):
            yield from _commands(command, (*path, name))


CASES = [(tool, path) for tool in (runtime_main, export_main, train_main)
         for _, path in _commands(tool)]


@pytest.mark.parametrize(("tool", "path"), CASES,
                         ids=[f"{tool.callback.__module__.split('.')[1]}:{' '.join(path) or '-'}"
                              for tool, path in CASES])
def test_help(tool: click.Command, path: tuple[str, ...]) -> None:
    result = CliRunner().invoke(tool, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("Usage:")
    command = tool
    for name in path:
        command = command.commands[name]
    first_line = (command.help or "").strip().splitlines()[0] if command.help else ""
    assert first_line and first_line[:40] in " ".join(result.output.split())


def test_every_tool_has_its_commands() -> None:
    assert {"solve", "info", "diagnose", "serve"} <= set(runtime_main.commands)
    assert {"data", "fit", "all", "scorer", "base"} <= set(train_main.commands)
    assert len(CASES) >= 1 + 4 + 1 + 5
