"""What a CLI verb is. Each package declares its verbs as `Verb` objects, registered as entry
points (group `twinspect.verbs` in pyproject.toml), so the CLI loads only the verb being run."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Verb:
    name: str
    help: str  # one line for `twinspect --help`
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]  # returns the exit code
    epilog: str = ""  # examples shown under the verb's --help
