"""What every ``python -m <package>`` command line shares: logging, one-line errors, a JSON result on stdout."""
from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Any, Callable


def run_command(args: argparse.Namespace, func: Callable[[argparse.Namespace], Any],
                errors: tuple[type[BaseException], ...], show: Callable[[Any], Any] = lambda r: r,
                limit: int | None = None, log_format: str = "%(levelname)s %(name)s: %(message)s") -> int:
    """Run ``func(args)``: print ``show(result)`` as JSON (cut at ``limit`` characters) and return 0, or print
    ``error: <message>`` on stderr and return 2 for one of ``errors`` (a bad argument, file or config: no
    traceback). ``args.verbose`` turns on debug logging."""
    logging.basicConfig(level=logging.DEBUG if getattr(args, "verbose", False) else logging.INFO,
                        stream=sys.stderr, format=log_format)
    try:
        result = func(args)
    except errors as exc:
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"error: {msg}", file=sys.stderr)
        return 2
    text = json.dumps(show(result), indent=1, default=str, allow_nan=False)
    print(text[:limit] if limit else text)
    return 0


def command_parser(prog: str, doc: str | None) -> tuple[argparse.ArgumentParser, Any]:
    """``(parser, subparsers)`` of a ``python -m <package>`` command: the module docstring as its help (kept as
    written), ``-v/--verbose``, and one required sub-command."""
    p = argparse.ArgumentParser(prog=prog, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p, p.add_subparsers(dest="command", required=True)
