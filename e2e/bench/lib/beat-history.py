"""Writes a topic's worth of heartbeat history as kcat input (`key<TAB>value`
lines): argv[1] beats of argv[2] programs (default 1,000), evenly spread
over the last argv[3] seconds (default 3600: an hour), about 490 bytes each, with the fields an OpenMSIStream
program and the sidecar put in a beat (counters, sequence, app health,
sidecar run). Shared by the benchmarks that replay history."""
import datetime
import json
import sys

n = int(sys.argv[1])
programs = int(sys.argv[2]) if len(sys.argv) > 2 else 1000
window = float(sys.argv[3]) if len(sys.argv) > 3 else 3600
now = datetime.datetime.now(datetime.timezone.utc)
started = (now - datetime.timedelta(hours=2)).isoformat()
out = sys.stdout
for i in range(n):
    t = now - datetime.timedelta(seconds=window * (n - i) / n)
    p = i % programs
    beat = {
        "timestamp": t.isoformat(), "schema": "heartbeat.dev/v1", "program_id": f"program-{p:04d}",
        "seq": i // programs, "interval_secs": 10, "phase": "running",
        "app": {"status": "ok"},
        "n_messages_read": i, "n_messages_processed": i, "n_bytes_read": 1024 * i,
        "n_bytes_processed": 1024 * i, "n_messages_produced": i, "n_bytes_produced": 512 * i,
        "recent_files": [f"/data/incoming/{i}.dat"],
        "host": f"host-{p:03d}",
        "sidecar": {"version": "0.1.0", "started_at": started, "undelivered": 0},
    }
    out.write(f"program-{p:04d}_heartbeat\t{json.dumps(beat)}\n")
