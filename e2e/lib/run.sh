# `e2e/stack up|down|status|env`: starts etcd, kube-apiserver and a KRaft
# Kafka broker on loopback, each as a process whose pid lives in
# $HB_STACK_DIR/pids, and stops exactly those processes again.

PIDS="$HB_STACK_DIR/pids"
LOGS="$HB_STACK_DIR/logs"
PKI="$HB_STACK_DIR/pki"
STACK_ENV="$HB_STACK_DIR/stack.env"
# HB_COMPONENTS narrows the stack, e.g. "kafka" for a private broker a test may stop.
read -r -a COMPONENTS <<<"${HB_COMPONENTS:-etcd kube-apiserver kube-controller-manager kube-scheduler process-node kafka}"
UP_TIMEOUT=${HB_UP_TIMEOUT:-120}

free_ports() {
	# Asks the kernel for N distinct free loopback ports.
	python3 - "$1" <<'PY'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
PY
}

# A pid is ours only if its command line mentions our state dir, so a reused
# pid of some other process is never signalled.
pid_of() {
	local f="$PIDS/$1.pid" pid
	[ -f "$f" ] || return 1
	pid=$(cat "$f")
	[ -r "/proc/$pid/cmdline" ] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF "$HB_STACK_DIR" && { echo "$pid"; return 0; }
	return 1
}

start_bg() {
	local name=$1; shift
	: >"$LOGS/$name.log"
	setsid "$@" >>"$LOGS/$name.log" 2>&1 </dev/null &
	echo $! >"$PIDS/$name.pid"
}

fail_component() {
	local name=$1 why=$2
	log "$name failed: $why"
	log "last lines of $LOGS/$name.log:"
	tail -n 30 "$LOGS/$name.log" >&2 || true
	cmd_down >/dev/null 2>&1 || true
	exit 1
}

wait_for() {
	local name=$1 check=$2 deadline=$((SECONDS + UP_TIMEOUT))
	until eval "$check" >/dev/null 2>&1; do
		pid_of "$name" >/dev/null || fail_component "$name" "process exited"
		[ $SECONDS -lt $deadline ] || fail_component "$name" "not healthy after ${UP_TIMEOUT}s"
		sleep 0.5
	done
}

require_tools() {
	local t missing=()
	if wants kube-apiserver; then
		for t in etcd kube-apiserver kube-controller-manager kube-scheduler kubectl; do
			[ -x "$TOOLS_BIN/$t" ] || missing+=("$t")
		done
	fi
	[ -d "$KAFKA_HOME/libs" ] || missing+=("kafka-$KAFKA_VERSION")
	command -v java >/dev/null || missing+=(java)
	command -v kcat >/dev/null || missing+=(kcat)
	[ ${#missing[@]} -eq 0 ] || die "missing tools: ${missing[*]}; run: e2e/stack install"
}

make_pki() {
	[ -f "$PKI/kubelet.crt" ] && return 0
	mkdir -p "$PKI"
	(
		cd "$PKI"
		openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=heartbeat-local-ca" \
			-keyout ca.key -out ca.crt 2>/dev/null
		openssl req -newkey rsa:2048 -nodes -subj "/CN=kube-apiserver" -keyout apiserver.key -out apiserver.csr 2>/dev/null
		printf 'subjectAltName=IP:127.0.0.1,IP:10.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc\nextendedKeyUsage=serverAuth\n' >apiserver.ext
		openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
			-extfile apiserver.ext -out apiserver.crt 2>/dev/null
		openssl req -newkey rsa:2048 -nodes -subj "/O=system:masters/CN=admin" -keyout admin.key -out admin.csr 2>/dev/null
		printf 'extendedKeyUsage=clientAuth\n' >client.ext
		openssl x509 -req -in admin.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
			-extfile client.ext -out admin.crt 2>/dev/null
		# Serving certificate of the process node's kubelet log API.
		openssl req -newkey rsa:2048 -nodes -subj "/CN=process-node" -keyout kubelet.key -out kubelet.csr 2>/dev/null
		printf 'subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:process-node\nextendedKeyUsage=serverAuth\n' >kubelet.ext
		openssl x509 -req -in kubelet.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
			-extfile kubelet.ext -out kubelet.crt 2>/dev/null
		openssl genrsa -out sa.key 2048 2>/dev/null
		openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
		rm -f ./*.csr ./*.ext
	) || die "generating certificates with openssl failed"
}

write_kubeconfig() {
	local port=$1
	cat >"$HB_STACK_DIR/kubeconfig" <<KC
apiVersion: v1
kind: Config
clusters:
- name: heartbeat-local
  cluster:
    server: https://127.0.0.1:$port
    certificate-authority: $PKI/ca.crt
users:
- name: admin
  user:
    client-certificate: $PKI/admin.crt
    client-key: $PKI/admin.key
contexts:
- name: heartbeat-local
  context: {cluster: heartbeat-local, user: admin, namespace: default}
current-context: heartbeat-local
KC
}

start_etcd() {
	local port=$1 peer=$2
	start_bg etcd "$TOOLS_BIN/etcd" --name hb-local --data-dir "$HB_STACK_DIR/etcd" \
		--listen-client-urls "http://127.0.0.1:$port" --advertise-client-urls "http://127.0.0.1:$port" \
		--listen-peer-urls "http://127.0.0.1:$peer" --initial-advertise-peer-urls "http://127.0.0.1:$peer" \
		--initial-cluster "hb-local=http://127.0.0.1:$peer" --log-level warn \
		--quota-backend-bytes 2147483648 --unsafe-no-fsync
	wait_for etcd "curl -sf http://127.0.0.1:$port/health | grep -q true"
}

start_apiserver() {
	local port=$1 etcd=$2
	start_bg kube-apiserver "$TOOLS_BIN/kube-apiserver" \
		--etcd-servers "http://127.0.0.1:$etcd" \
		--bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$port" \
		--cert-dir "$HB_STACK_DIR/apiserver-certs" \
		--tls-cert-file "$PKI/apiserver.crt" --tls-private-key-file "$PKI/apiserver.key" \
		--client-ca-file "$PKI/ca.crt" \
		--service-account-issuer https://kubernetes.default.svc.cluster.local \
		--service-account-key-file "$PKI/sa.pub" --service-account-signing-key-file "$PKI/sa.key" \
		--service-cluster-ip-range 10.0.0.0/24 \
		--authorization-mode Node,RBAC \
		--enable-admission-plugins NamespaceLifecycle,ServiceAccount,MutatingAdmissionWebhook,ValidatingAdmissionWebhook,ValidatingAdmissionPolicy \
		--endpoint-reconciler-type none \
		--kubelet-preferred-address-types InternalIP --kubelet-certificate-authority "$PKI/ca.crt" \
		--allow-privileged=true --profiling=false --v=1
	wait_for kube-apiserver "'$TOOLS_BIN/kubectl' --kubeconfig '$HB_STACK_DIR/kubeconfig' get --raw /readyz"
}

start_controller_manager() {
	local port=$1 kc="$HB_STACK_DIR/kubeconfig"
	start_bg kube-controller-manager "$TOOLS_BIN/kube-controller-manager" \
		--kubeconfig "$kc" --authentication-kubeconfig "$kc" --authorization-kubeconfig "$kc" \
		--bind-address 127.0.0.1 --secure-port "$port" --cert-dir "$HB_STACK_DIR/kcm-certs" \
		--service-account-private-key-file "$PKI/sa.key" --root-ca-file "$PKI/ca.crt" \
		--use-service-account-credentials=false --leader-elect=false \
		--controllers '*' --concurrent-gc-syncs 5 --v=1
	wait_for kube-controller-manager "curl -skf https://127.0.0.1:$port/healthz"
}

start_scheduler() {
	local port=$1 kc="$HB_STACK_DIR/kubeconfig"
	start_bg kube-scheduler "$TOOLS_BIN/kube-scheduler" \
		--kubeconfig "$kc" --authentication-kubeconfig "$kc" --authorization-kubeconfig "$kc" \
		--bind-address 127.0.0.1 --secure-port "$port" --cert-dir "$HB_STACK_DIR/scheduler-certs" \
		--leader-elect=false --v=1
	wait_for kube-scheduler "curl -skf https://127.0.0.1:$port/healthz"
}

# The process node: a kubelet stand-in (e2e/src/node) running containers as
# local processes. Built on demand when no binary is there yet.
process_node_bin() {
	local b
	for b in "${HB_PROCESS_NODE_BIN:-}" "$REPO_DIR/target/debug/process-node" "$REPO_DIR/target/release/process-node"; do
		[ -n "$b" ] && [ -x "$b" ] && { echo "$b"; return 0; }
	done
	log "building the process node (cargo build -p heartbeat-e2e --bin process-node)"
	(cd "$REPO_DIR" && cargo build -q -p heartbeat-e2e --bin process-node) >&2 || return 1
	echo "$REPO_DIR/target/debug/process-node"
}

start_process_node() {
	local port=$1 bin
	bin=$(process_node_bin) || die "building the process node failed"
	mkdir -p "$HB_STACK_DIR/node"
	start_bg process-node "$bin" --kubeconfig "$HB_STACK_DIR/kubeconfig" \
		--node-name process-node --state-dir "$HB_STACK_DIR/node" --repo-dir "$REPO_DIR" \
		--kubelet-port "$port" --tls-cert "$PKI/kubelet.crt" --tls-key "$PKI/kubelet.key"
	wait_for process-node "'$TOOLS_BIN/kubectl' --kubeconfig '$HB_STACK_DIR/kubeconfig' get node process-node -o jsonpath='{.status.conditions[?(@.type==\"Ready\")].status}' | grep -q True"
}

start_kafka() {
	local port=$1 ctrl=$2 dir="$HB_STACK_DIR/kafka"
	mkdir -p "$dir"
	cat >"$dir/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$ctrl
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$ctrl
advertised.listeners=PLAINTEXT://127.0.0.1:$port
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$dir/data
num.partitions=1
auto.create.topics.enable=false
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
PROPS
	cat >"$dir/log4j2.properties" <<'L4J'
rootLogger.level = WARN
rootLogger.appenderRef.stdout.ref = STDOUT
appender.stdout.type = Console
appender.stdout.name = STDOUT
appender.stdout.layout.type = PatternLayout
appender.stdout.layout.pattern = [%d] %p %m (%c)%n
logger.kafka.name = kafka.server.KafkaServer
logger.kafka.level = INFO
L4J
	local java=(java -Xms128m -Xmx512m -XX:+UseSerialGC -Dlog4j2.configurationFile="$dir/log4j2.properties" -cp "$KAFKA_HOME/libs/*")
	if [ ! -f "$dir/data/meta.properties" ]; then
		local id
		id=$("${java[@]}" kafka.tools.StorageTool random-uuid) || die "kafka: random-uuid failed"
		"${java[@]}" kafka.tools.StorageTool format -t "$id" -c "$dir/server.properties" >"$LOGS/kafka-format.log" 2>&1 ||
			{ tail "$LOGS/kafka-format.log" >&2; die "kafka: formatting storage failed"; }
	fi
	start_bg kafka "${java[@]}" kafka.Kafka "$dir/server.properties"
	wait_for kafka "kcat -L -b 127.0.0.1:$port -m 3 -J | grep -q '\"brokers\":\[{'"
}

wants() { [[ " ${COMPONENTS[*]} " == *" $1 "* ]]; }

stack_var() { sed -n "s/^$1=//p" "$STACK_ENV" 2>/dev/null; }

stop_one() {
	local c=$1 pid i
	pid=$(pid_of "$c") || { rm -f "$PIDS/$c.pid"; return 0; }
	kill -TERM "$pid" 2>/dev/null || true
	for i in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
	kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
	rm -f "$PIDS/$c.pid"
	log "stopped $c ($pid)"
}

# `e2e/stack stop kafka` / `e2e/stack start kafka`: take the broker away and
# bring it back on the same port, for tests of broker outages.
cmd_stop() {
	[ "${1:-}" = kafka ] || die "usage: e2e/stack stop kafka"
	stop_one kafka
}

cmd_start() {
	[ "${1:-}" = kafka ] || die "usage: e2e/stack start kafka"
	pid_of kafka >/dev/null && return 0
	local bootstrap ctrl
	bootstrap=$(stack_var KAFKA_BOOTSTRAP)
	ctrl=$(stack_var KAFKA_CONTROLLER_PORT)
	[ -n "$bootstrap" ] && [ -n "$ctrl" ] || die "stack is not up ($HB_STACK_DIR)"
	start_kafka "${bootstrap##*:}" "$ctrl"
	log "started kafka on $bootstrap"
}

all_running() {
	local c
	for c in "${COMPONENTS[@]}"; do pid_of "$c" >/dev/null || return 1; done
}

cmd_up() {
	local owner="" fresh=""
	while [ $# -gt 0 ]; do
		case "$1" in
		--stop-when-exits) owner=${2:?"--stop-when-exits needs a pid"}; shift 2 ;;
		--fresh) fresh=1; shift ;;
		*) die "up: unknown option $1 (known: --stop-when-exits PID, --fresh)" ;;
		esac
	done
	require_tools
	mkdir -p "$PIDS" "$LOGS"
	if all_running && [ -f "$STACK_ENV" ]; then
		# A stack a fixture started, whose owner has exited (the previous test
		# binary), stays up for this new user.
		if [ -n "$owner" ] && watcher_alive && ! kill -0 "$(cat "$PIDS/owner" 2>/dev/null)" 2>/dev/null; then
			echo "$owner" >"$PIDS/owner"
		fi
		log "already up ($HB_STACK_DIR)"
		return 0
	fi
	# Anything half-started or left by a crash goes first.
	cmd_down >/dev/null 2>&1 || true
	mkdir -p "$PIDS" "$LOGS"
	if [ -n "$fresh" ]; then
		# Tests start from an empty cluster and broker, not last run's objects.
		rm -rf "$HB_STACK_DIR/etcd" "$HB_STACK_DIR/kafka" "$HB_STACK_DIR/node"
	fi
	local ports etcd peer api kafka ctrl kcm sched kubelet env=""
	ports=$(free_ports 8)
	read -r etcd peer api kafka ctrl kcm sched kubelet <<<"$ports"
	if wants kube-apiserver; then
		make_pki
		write_kubeconfig "$api"
		log "starting etcd on 127.0.0.1:$etcd"
		start_etcd "$etcd" "$peer"
		log "starting kube-apiserver on https://127.0.0.1:$api"
		start_apiserver "$api" "$etcd"
		env+="KUBECONFIG=$HB_STACK_DIR/kubeconfig"$'\n'"KUBE_APISERVER=https://127.0.0.1:$api"$'\n'"ETCD_ENDPOINT=http://127.0.0.1:$etcd"$'\n'
	fi
	if wants kube-controller-manager; then
		log "starting kube-controller-manager and kube-scheduler"
		start_controller_manager "$kcm"
		start_scheduler "$sched"
	fi
	if wants process-node; then
		log "starting the process node"
		start_process_node "$kubelet"
	fi
	if wants kafka; then
		log "starting Kafka $KAFKA_VERSION on 127.0.0.1:$kafka"
		start_kafka "$kafka" "$ctrl"
		env+="KAFKA_BOOTSTRAP=127.0.0.1:$kafka"$'\n'"KAFKA_CONTROLLER_PORT=$ctrl"$'\n'
	fi
	printf '%s' "$env" >"$STACK_ENV"
	[ -z "$owner" ] || watch_owner "$owner"
	log "up: eval \"\$(e2e/stack env)\" to use it"
}

# Test fixtures start a stack for one test binary; this watcher stops it when
# that process exits, however it exits (pass, panic, abort).
watch_owner() {
	echo "$1" >"$PIDS/owner"
	# The owner may be handed on (see cmd_up), so re-read it, and only stop
	# once it has been gone for two checks in a row.
	setsid bash -c 'gone=0
		while [ $gone -lt 2 ]; do
			if kill -0 "$(cat "$1" 2>/dev/null)" 2>/dev/null; then gone=0; else gone=$((gone + 1)); fi
			sleep 1
		done
		HB_STACK_DIR="$2" "$3" down' \
		hb-stack-watcher "$PIDS/owner" "$HB_STACK_DIR" "$E2E_DIR/stack" >>"$LOGS/watcher.log" 2>&1 </dev/null &
	echo $! >"$PIDS/watcher.pid"
}

watcher_alive() {
	local pid
	pid=$(cat "$PIDS/watcher.pid" 2>/dev/null) && grep -qF hb-stack-watcher "/proc/$pid/cmdline" 2>/dev/null
}

cmd_down() {
	local c pid
	# The node first: it stops its containers before it exits.
	for c in process-node kube-scheduler kube-controller-manager kafka kube-apiserver etcd; do stop_one "$c"; done
	kill_orphaned_containers
	rm -f "$STACK_ENV"
	# The watcher itself, when `down` is run by hand.
	pid=$(cat "$PIDS/watcher.pid" 2>/dev/null) && [ "$pid" != "$$" ] && [ "$PPID" != "$pid" ] &&
		grep -qF hb-stack-watcher "/proc/$pid/cmdline" 2>/dev/null && kill "$pid" 2>/dev/null
	rm -f "$PIDS/watcher.pid" "$PIDS/owner"
	return 0
}

# Containers the process node started live in their own process groups; if
# the node died without cleaning up, their pid files are still here.
kill_orphaned_containers() {
	local f pid start stat now
	for f in "$HB_STACK_DIR"/node/pods/*/*/pid; do
		[ -f "$f" ] || continue
		read -r pid start <"$f" || true
		rm -f "$f"
		[[ "$pid" =~ ^[0-9]+$ ]] && [ "$pid" -gt 1 ] || continue
		# Only if the pid still names the process the node started (field 22: start time).
		stat=$(cat "/proc/$pid/stat" 2>/dev/null) || continue
		read -r -a now <<<"${stat##*) }"
		[ "${now[19]:-}" = "$start" ] || continue
		kill -KILL -- "-$pid" 2>/dev/null && log "killed orphaned container group $pid" || true
	done
	return 0
}

cmd_status() {
	local c pid rc=0
	for c in "${COMPONENTS[@]}"; do
		if pid=$(pid_of "$c"); then echo "$c: running (pid $pid)"; else echo "$c: stopped"; rc=1; fi
	done
	[ -f "$STACK_ENV" ] && cat "$STACK_ENV"
	return $rc
}

# `e2e/stack create-topic NAME [PARTITIONS]` (auto-creation is off on purpose).
cmd_create_topic() {
	local name=${1:?usage: e2e/stack create-topic NAME [PARTITIONS]} parts=${2:-1} bootstrap
	bootstrap=$(stack_var KAFKA_BOOTSTRAP)
	[ -n "$bootstrap" ] || die "stack is not up ($HB_STACK_DIR)"
	java -cp "$KAFKA_HOME/libs/*" -Dlog4j2.configurationFile="$HB_STACK_DIR/kafka/log4j2.properties" \
		org.apache.kafka.tools.TopicCommand --bootstrap-server "$bootstrap" \
		--create --if-not-exists --topic "$name" --partitions "$parts" --replication-factor 1 >&2
}

cmd_env() {
	[ -f "$STACK_ENV" ] || die "stack is not up ($HB_STACK_DIR); run: e2e/stack up"
	local line
	while IFS= read -r line; do echo "export $line"; done <"$STACK_ENV"
	echo "export HB_STACK_DIR=$HB_STACK_DIR"
	echo "export HB_TOOLS_DIR=$HB_TOOLS_DIR"
	echo "export PATH=$TOOLS_BIN:\$PATH"
}
