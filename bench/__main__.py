"""``python -m bench`` (``make bench``): run every benchmark, each ending in key=value lines."""

from __future__ import annotations

import sys

from bench import digest, scan


def main() -> None:
    args = sys.argv[1:]
    print("== scan ==", flush=True)
    scan.main(args)
    print("== digest ==", flush=True)
    digest.main(args)


if __name__ == "__main__":
    main()
