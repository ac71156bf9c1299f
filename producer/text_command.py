"""``aimass generate --prompt``: ask a sequence model for text, printed as it is made
with ``--stream``, else once whole."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from aimass.producer.streams import StreamRestarted


def add_text_options(parser: argparse.ArgumentParser) -> None:
    """The options of a sequence job, on ``aimass generate``."""
    text = parser.add_argument_group("text (a sequence model, e.g. charlm)")
    text.add_argument("--prompt", help="text to continue: sends an aimass.sequence job")
    text.add_argument("--stream", action="store_true", help="print the text as it is made")
    text.add_argument("--max-tokens", type=int, default=64, help="tokens to write at most (64)")
    text.add_argument("--temperature", type=float, default=1.0, help="0: greedy (1.0)")
    text.add_argument("--top-k", type=int, default=0, help="sample among the k likeliest (0: all)")
    text.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (1.0)")
    text.add_argument(
        "--stop", action="append", default=[], help="end the text at this string; repeatable"
    )


def run_text(client: Any, args: argparse.Namespace, options: dict[str, Any]) -> None:
    """Send the job; print its text (streamed, or whole), or its id with --no-wait."""
    job = client.sequence(
        args.prompt,
        model=args.model,
        version=args.version,
        max_tokens=args.max_tokens,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        seed=args.seed,
        stop=args.stop,
        stream=args.stream,
        **options,
    )
    if args.no_wait:
        print(job.id)
        return
    if args.stream and not args.json:
        print_stream(job, args.timeout)
    result = job.result(timeout=args.timeout, decode=False)
    if args.json:
        print(json.dumps(result))
    elif not args.stream:
        print(result["text"])


def print_stream(job: Any, timeout: float | None) -> None:
    """Print a job's text as it comes; a restart is said on stderr and the text printed
    again from its start."""
    stream = job.stream(timeout=timeout)
    while True:
        try:
            for piece in stream:
                sys.stdout.write(piece)
                sys.stdout.flush()
            break
        except StreamRestarted as restart:
            print(f"\n[{restart}: its text again]", file=sys.stderr)
    sys.stdout.write("\n")
