# Shared settings of e2e/stack, test-all and the demo: the pinned versions,
# where tools are cached, and the hb-stack supervisor. Sourced, never run.

E2E_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
REPO_DIR=$(cd "$E2E_DIR/.." && pwd)
# shellcheck source=../tools/versions.env
. "$E2E_DIR/tools/versions.env"

HB_TOOLS_DIR=${HB_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/heartbeat-operator/tools}
TOOLS_BIN="$HB_TOOLS_DIR/bin"
KAFKA_HOME="$HB_TOOLS_DIR/kafka-$KAFKA_VERSION"
# What hb-stack needs to know of the above.
export HB_TOOLS_DIR HB_KAFKA_HOME="$KAFKA_HOME"

# With the seconds since the script started, so a CI log shows where a cold run spends its time.
log() { printf '[stack %ds] %s\n' "$SECONDS" "$*" >&2; }
die() { printf '[stack] error: %s\n' "$*" >&2; exit 1; }

# The supervisor (testbed/stack, binary hb-stack), built when missing or
# older than its sources, so a fresh clone needs no separate step.
hb_stack_bin() {
	local target=${CARGO_TARGET_DIR:-$REPO_DIR/target} bin
	bin="$target/debug/hb-stack"
	if [ ! -x "$bin" ] || [ -n "$(find "$REPO_DIR/testbed/stack" -newer "$bin" -type f -print -quit)" ]; then
		log "building the stack supervisor (cargo build -p heartbeat-testbed)"
		(cd "$REPO_DIR" && cargo build -q -p heartbeat-testbed --bin hb-stack) >&2 ||
			die "building hb-stack failed"
	fi
	echo "$bin"
}
