"""One module per command; each stays thin: parse, build the config, call the library, print."""

from __future__ import annotations

import importlib

import click

# (module, command attribute); a module that is not written yet is simply not registered.
COMMANDS = (
    ("kia.commands.probe", "probe"),
    ("kia.commands.build", "build"),
    ("kia.commands.inject", "inject"),
    ("kia.commands.audit", "audit"),
    ("kia.commands.report", "report"),
    ("kia.commands.sweep", "sweep"),
    ("kia.commands.demo", "demo"),
    ("kia.commands.toyworld", "toyworld"),
)


def register(group: click.Group) -> click.Group:
    for module, attr in COMMANDS:
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name == module:
                continue
            raise
        group.add_command(getattr(mod, attr))
    return group
