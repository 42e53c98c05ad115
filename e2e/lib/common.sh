# Shared settings for e2e/stack and its parts: where tools and state live.
# Sourced, never run.

E2E_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
REPO_DIR=$(cd "$E2E_DIR/.." && pwd)
# shellcheck source=../tools/versions.env
. "$E2E_DIR/tools/versions.env"

HB_TOOLS_DIR=${HB_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/heartbeat-operator/tools}
HB_STACK_DIR=${HB_STACK_DIR:-${XDG_STATE_HOME:-$HOME/.local/state}/heartbeat-operator/stack}
TOOLS_BIN="$HB_TOOLS_DIR/bin"
KAFKA_HOME="$HB_TOOLS_DIR/kafka-$KAFKA_VERSION"

log() { printf '[stack] %s\n' "$*" >&2; }
die() { printf '[stack] error: %s\n' "$*" >&2; exit 1; }
