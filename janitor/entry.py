"""Console entry point (`janitor`, `python -m janitor`).

`janitor guard` runs in ExecStartPre= before a service on every start, so it must start
fast. Building the typer app costs more than half of janitor's start-up (typer and its
click take ~50 ms to import, `python -c pass` ~35 ms), so a plain `janitor guard ...`
command line is parsed here without typer and run through the same library call and the
same error reporting. Anything else, including `guard --help` and any guard command line
the small parser does not fully understand, goes to the typer CLI in janitor/cli.py, so
help and usage errors look exactly as for every other command.
"""

from __future__ import annotations

import gc
import os
import sys


def main(argv: list[str] | None = None) -> None:
    # Start-up builds ~200k long-lived objects (typer, pydantic models, botocore's service
    # model); with the default threshold of 700 allocations the cyclic GC rescans them
    # hundreds of times, ~60 ms of every command. Young collections still run, just less
    # often, so cyclic garbage is still reclaimed.
    gc.set_threshold(100_000, 20, 100)
    if argv is not None:
        _main(list(argv))
        return
    # The console script: once the command has finished (catalog closed, logs and metrics
    # written and flushed), skip the interpreter's teardown. Freeing every module and
    # object of typer, pydantic and botocore one by one costs 0.1-0.2 s per run.
    try:
        _main(sys.argv[1:])
        code: object = 0
    except SystemExit as exc:
        code = exc.code
    if code is not None and not isinstance(code, int):
        if sys.stderr is not None:
            print(code, file=sys.stderr)  # what sys.exit("message") would have done
        code = 1
    for stream in (sys.stdout, sys.stderr):
        if stream is None:  # started with that descriptor closed
            continue
        try:
            stream.flush()
        except (BrokenPipeError, ValueError):
            pass  # the reader went away (`| head`) or the stream is closed: nothing to add
        except OSError:
            code = code or 120  # output lost (disk full...): Python's own exit status for it
    os._exit(code or 0)


def _main(args: list[str]) -> None:
    if "guard" in args:
        from .guard import parse_fast

        request = parse_fast(args)
        if request is not None:
            from .guard import run_guard
            from .plugins import load_policy_files

            try:
                code = run_guard(request, load_policy_files)
            except (Exception, KeyboardInterrupt) as exc:
                from .failures import report_error  # the event machinery: only for a failure

                code = report_error(exc, request.debug, command="guard", log_format=request.log_format,
                                    log_file=request.log_file)
            sys.exit(code)
    from .cli import main as cli_main

    cli_main(args)
