"""Job time per rule of a Snakemake run, read from its log: where `make demo`'s time goes.

    python benchmarks/demo_profile.py [LOG]

LOG defaults to the newest `.snakemake/log/*.snakemake.log` of the current folder that ran jobs
(a report's log runs none). A job's time runs from the timestamp above its `rule` (or
`localrule`) entry to the one above its `Finished jobid` line, so jobs that ran side by side each
count in full: the total is job time, about twice the wall time on 2 cores. Prints rule, jobs,
total and mean seconds, longest first.
"""

import re
import sys
from collections import defaultdict
from datetime import datetime
from pathlib import Path

STAMP = re.compile(r"^\[(\w{3} \w{3} +\d+ [\d:]+ \d{4})\]$")
RULE = re.compile(r"^(?:local)?rule (\w+):$")
JOBID = re.compile(r"^\s+jobid: (\d+)$")
FINISHED = re.compile(r"^Finished jobid: (\d+)")


def job_times(lines) -> dict[str, list[float]]:
    """{rule: [seconds of each finished job]} of a Snakemake log's lines."""
    stamp = rule = None
    started: dict[str, tuple[str, datetime]] = {}
    times: dict[str, list[float]] = defaultdict(list)
    for line in lines:
        if match := STAMP.match(line):
            stamp = datetime.strptime(match.group(1), "%a %b %d %H:%M:%S %Y")
        elif match := RULE.match(line):
            rule = match.group(1)
        elif (match := JOBID.match(line)) and rule:
            started[match.group(1)], rule = (rule, stamp), None
        elif (match := FINISHED.match(line)) and match.group(1) in started:
            name, start = started.pop(match.group(1))
            times[name].append((stamp - start).total_seconds())
    return times


def newest_log() -> Path:
    logs = sorted(Path(".snakemake/log").glob("*.snakemake.log"), key=lambda p: p.stat().st_mtime)
    logs = [log for log in logs if "Finished jobid" in log.read_text()]
    if not logs:
        sys.exit("no .snakemake/log/*.snakemake.log here: run snakemake first, or name a log")
    return logs[-1]


def main() -> None:
    log = Path(sys.argv[1]) if len(sys.argv) > 1 else newest_log()
    times = job_times(log.read_text().splitlines())
    print(f"{log}\n{'rule':28s} {'jobs':>5s} {'total_s':>8s} {'mean_s':>7s}")
    for name, seconds in sorted(times.items(), key=lambda item: -sum(item[1])):
        mean = sum(seconds) / len(seconds)
        print(f"{name:28s} {len(seconds):5d} {sum(seconds):8.0f} {mean:7.1f}")
    jobs = [s for seconds in times.values() for s in seconds]
    print(f"{'(total)':28s} {len(jobs):5d} {sum(jobs):8.0f}")  # a rule may be called all


if __name__ == "__main__":
    main()
