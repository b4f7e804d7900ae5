"""What the samples' command lines share."""

from __future__ import annotations

import argparse


class Help(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows each option's default (unless its help says it), and the docstring as written."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        return action.help if action.default is None else super()._get_help_string(action)


def parser(doc: str | None) -> argparse.ArgumentParser:
    """A parser showing the sample's docstring, with the --procs option every sample has."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=Help)
    ap.add_argument(
        "--procs", type=int, default=None, help="Ps (default: $MNSCHED_PROCS, else the CPUs)"
    )
    return ap
