#!/usr/bin/env python3
"""Reads `kcat -f '%k\\t%s\\n'` output and prints the latest beat per program."""
import datetime
import json
import sys

last = {}
for line in sys.stdin:
    key, _, value = line.rstrip("\n").partition("\t")
    try:
        last[key] = json.loads(value)
    except ValueError:
        pass
now = datetime.datetime.now(datetime.timezone.utc)
print(f"{'PROGRAM':42} {'SEQ':>5} {'AGE':>6}  {'PHASE':9} APP")
for key, beat in sorted(last.items()):
    age = (now - datetime.datetime.fromisoformat(beat["timestamp"])).total_seconds()
    program = key.removesuffix("_heartbeat")
    app = beat.get("app", {}).get("status", "-")
    print(f"{program:42} {beat.get('seq', '-'):>5} {age:5.0f}s  {beat.get('phase', '-'):9} {app}")
