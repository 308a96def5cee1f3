"""The `pyoptim` command: `pyoptim <command> [options]`.

Each command is a module with DESCRIPTION, add_arguments(parser) and run(args) -> exit status,
listed in COMMANDS; the module is imported only to build its options (keep its heavy imports
inside run). To add one, add a line to COMMANDS.
"""

from __future__ import annotations

import argparse
import importlib
import shlex
import sys

# command name -> module
COMMANDS = {
    "bench": "pyoptim.bench",
    "compare": "pyoptim.compare",
}


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(
        prog="pyoptim",
        description="pyoptim: compiled optimizer steps. Run `pyoptim COMMAND --help` for a "
                    "command's options.",
    )
    commands = parser.add_subparsers(dest="command", title="commands", required=True)
    modules = {}
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(module_name)
        modules[name] = module
        sub = commands.add_parser(name, help=module.DESCRIPTION)
        module.add_arguments(sub)
    args = parser.parse_args(argv)
    args.prog = f"pyoptim {args.command}"
    args.command_line = shlex.join(["pyoptim", *argv])
    return modules[args.command].run(args)


if __name__ == "__main__":
    sys.exit(main())
