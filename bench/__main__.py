"""``python -m bench`` (``make bench``): run every benchmark, each ending in key=value lines,
then one table of every figure against its target and the final key=value lines.

``python -m bench dispatch`` (or ``scan``, ``digest``, ``approval``, several at once) runs only
those parts; the flags after them (``--engines sqlite``) go to each part."""

from __future__ import annotations

import sys

from bench import approval_ack, digest, dispatch, scan

PARTS = ("dispatch", "approval", "scan", "digest")  # the latency ones before the bulk loads
FINAL = (
    "dispatch_efficiency_slack",
    "dispatch_efficiency_telegram",
    "dispatch_duplicates",
    "dispatch_lost",
    "approval_ack_p99_ms",
)
# key: (benchmark, engine, target text, passes(value))
TARGETS = {
    "scan_vs_sql_sqlite": ("scan / GROUP BY", "sqlite", "<= 2", lambda v: v <= 2),
    "scan_vs_sql_postgres": ("scan / GROUP BY", "postgres", "<= 2", lambda v: v <= 2),
    "scan_peak_rss_mb": ("scan peak RSS MB", "worse", "<= 300", lambda v: v <= 300),
    "digest_100_managers_s": ("digest 100 managers s", "slower", "<= 30", lambda v: v <= 30),
    "digest_peak_rss_mb": ("digest peak RSS MB", "worse", "<= 400", lambda v: v <= 400),
    "dispatch_efficiency_slack": ("dispatch efficiency Slack", "worse", ">= 0.9",
                                  lambda v: v >= 0.9),
    "dispatch_efficiency_telegram": (
        "dispatch efficiency Telegram", "worse", ">= 0.9", lambda v: v >= 0.9,
    ),
    "dispatch_duplicates": ("dispatch duplicates", "worse", "0", lambda v: v == 0),
    "dispatch_lost": ("dispatch lost", "worse", "0", lambda v: v == 0),
    "dispatch_429s": ("dispatch 429s", "worse", "0", lambda v: v == 0),
    "approval_ack_p99_ms": ("approval ack p99 ms", "postgres", "< 100", lambda v: v < 100),
}  # fmt: skip


def main() -> None:
    args = sys.argv[1:]
    chosen = [a for a in args if a in PARTS]
    flags = [a for a in args if a not in PARTS]
    figures: dict[str, str] = {}
    for part in chosen or PARTS:
        print(f"== {part} ==", flush=True)
        if part == "scan":
            figures.update(scan.main(flags))
        elif part == "digest":
            figures.update(digest.main(flags))
        elif part == "dispatch":
            figures.update(dispatch.main(flags))
        else:
            figures.update(approval_ack.main(flags))
    print("== summary ==")
    print(f"{'benchmark':<30}{'engine':<10}{'figure':>10}{'target':>9}  result")
    for key, value in figures.items():
        name, engine, target, passes = TARGETS.get(key, (key, "", "", None))
        try:
            verdict = "pass" if passes and passes(float(value)) else ("FAIL" if passes else "")
        except ValueError:
            verdict = "n/a"
        print(f"{name:<30}{engine:<10}{value:>10}{target:>9}  {verdict}")
    for key in FINAL:
        if key in figures:
            print(f"{key}={figures[key]}")


if __name__ == "__main__":
    main()
