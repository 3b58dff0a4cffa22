"""`twinspect`: one program, one verb per job. Library errors become one line and an exit code.

Verbs come from the `twinspect.verbs` entry points; only the verb being run is imported, so
`twinspect run` on the line never loads the training code, and `--help` works without TensorFlow.
"""

from __future__ import annotations

import argparse
import sys
from importlib.metadata import entry_points

from edge_runtime import __version__
from edge_runtime.errors import EXIT_BAD_INPUT, TwinspectError
from edge_runtime.verbs import Verb

ORDER = ("generate", "train", "audit", "export", "run", "serve", "eval", "bench")


def _verb_entry_points() -> dict[str, object]:
    eps = {ep.name: ep for ep in entry_points(group="twinspect.verbs")}
    return dict(sorted(eps.items(), key=lambda kv: (*ORDER, kv[0]).index(kv[0])))


def _load(ep) -> Verb:
    # A verb module imports only the standard library and edge_runtime at the top; TensorFlow
    # is imported inside its run function, so loading it is cheap and works in an edge install.
    return ep.load()


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="twinspect",
        description="Edge visual inspection of factory parts with a twin network.",
        epilog="Run 'twinspect VERB --help' for a verb's options and examples.",
    )
    parser.add_argument("--version", action="version", version=f"twinspect {__version__}")
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    for name, ep in _verb_entry_points().items():
        if only is not None and name != only:
            sub.add_parser(name, add_help=False)  # keep the name valid, load nothing
            continue
        verb = _load(ep)
        p = sub.add_parser(
            name,
            help=verb.help,
            description=verb.help,
            epilog=verb.epilog or None,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        verb.add_arguments(p)
        p.set_defaults(_verb=verb)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    first = next((a for a in argv if not a.startswith("-")), None)
    known = _verb_entry_points()
    parser = build_parser(only=first if first in known else None)
    args = parser.parse_args(argv)
    verb: Verb | None = getattr(args, "_verb", None)
    if verb is None:
        parser.print_help()
        return EXIT_BAD_INPUT
    try:
        return int(verb.run(args) or 0)
    except TwinspectError as e:
        print(f"twinspect {verb.name}: error: {e}", file=sys.stderr)
        return e.exit_code
    except BrokenPipeError:  # e.g. `twinspect run ... | head`
        return 0


if __name__ == "__main__":
    sys.exit(main())
