"""Every command and subcommand answers --help with its own text, exit 0 (walked from the root
group, so a new command is covered the day it is added)."""

from __future__ import annotations

import re

import click
import pytest
from click.testing import CliRunner

from tradeledger.cli import main


def _walk(group: click.Group, path: tuple[str, ...] = ()):
    for name, command in sorted(group.commands.items()):
        yield path + (name,), command
        if isinstance(command, click.Group):
            yield from _walk(command, path + (name,))


COMMANDS = list(_walk(main))


def test_the_tree_is_not_empty():
    assert len(COMMANDS) > 60


@pytest.mark.parametrize("path, command", COMMANDS, ids=[" ".join(p) for p, _ in COMMANDS])
def test_help(path, command):
    result = CliRunner().invoke(main, [*path, "--help"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert result.output.startswith("Usage: "), result.output
    assert (command.help or command.short_help or "").strip(), f"{' '.join(path)} has no help text"
    assert "Traceback" not in result.output


GROUPS = [(path, command) for path, command in COMMANDS if isinstance(command, click.Group) and len(path) == 1]


@pytest.mark.parametrize("path, group", GROUPS, ids=[" ".join(p) for p, _ in GROUPS])
def test_a_group_run_alone_has_all_its_subcommands(path, group):
    """The CLI imports only the module of the command it runs (cli.COMMAND_MODULES): a subcommand
    another module attaches to a group (`data fetch`, `instruments contracts`) is still there."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "tradeledger.cli", *path, "--help"], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    listed = set(re.findall(r"^  (\S+)", proc.stdout.split("Commands:", 1)[1], re.M))
    assert listed == set(group.commands), set(group.commands) ^ listed


@pytest.mark.parametrize("path, command", COMMANDS, ids=[" ".join(p) for p, _ in COMMANDS])
def test_every_option_says_what_it_is(path, command):
    """`--help` explains every option it lists (`--date TEXT` alone tells a new user nothing)."""
    bare = [param.opts[0] for param in command.params
            if isinstance(param, click.Option) and not param.hidden and not (param.help or "").strip()]
    assert not bare, f"{' '.join(path)}: {', '.join(bare)} without help"


REASONED = [(path, command) for path, command in COMMANDS
            if any(isinstance(p, click.Option) and "--reason" in p.opts for p in command.params)]


@pytest.mark.parametrize("path, command", REASONED, ids=[" ".join(p) for p, _ in REASONED])
@pytest.mark.parametrize("flag", ["--reason", "--why", "--note"])
@pytest.mark.parametrize("blank", ["", "  "])
def test_an_empty_reason_is_refused_everywhere(path, command, flag, blank):
    """One reason flag on every command that keeps a reason (the old spellings hidden aliases of it),
    never empty: refused before anything runs."""
    result = CliRunner().invoke(main, [*path, flag, blank])
    assert result.exit_code == 2, result.output
    assert "may not be empty" in result.output, result.output


def test_the_reason_commands_are_all_there():
    names = {" ".join(path) for path, _ in REASONED}
    assert {"targets approve", "targets reject", "exceptions ack", "exceptions resolve", "roll set",
            "adjust adopt", "adjust cash", "actions fee", "actions interest"} <= names
