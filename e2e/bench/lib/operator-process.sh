# Sourced by the benchmarks that measure the operator as a process (the
# release build, as its least-privilege ServiceAccount, in the stack's
# network namespace): brings up a stack of their own with the CRD and
# starts the operator, either the way the cluster tests do (the e2e
# fixture, `operator-fixture`) or by hand under the chart's names (for the
# benchmarks that stop and restart processes). Callers set `repo`, cd
# there, and use:
#   bench_stack_up                 stack in $HB_BENCH_STACK_DIR (default target/bench-stack), CRD applied
#   bench_fixture_start [ARGS]     the release operator through the e2e fixture: its own
#                                  ServiceAccount, names and injected namespace; sets HB_OP_*
#                                  (HB_OP_WEBHOOK_URL, HB_OP_ADMIN_URL, HB_OP_CA, HB_OP_APP_NAMESPACE...)
#   bench_namespaces               by hand: the RBAC, namespace `bench` with its broker Secret
#   bench_operator_start [ARGS]    by hand: the operator; sets $operator (pid), $work/ca.pem
#   bench_monitor YAML_SPEC_LINES  monitor `ingest` (in the fixture's namespace, labelled for
#                                  its operator, once bench_fixture_start ran; else in `bench`)
#   bench_review_json FILE         a Deployment's pod at admission (~5 KB, injected)
# Everything stops when the caller exits (trap set here).

bench_stack_up() {
	e2e/stack install
	[ -n "${HB_BENCH_NO_BUILD:-}" ] || cargo build -q --release -p heartbeat-operator
	cargo build -q --release -p heartbeat-e2e --bin admission-load --bin operator-fixture
	cargo build -q -p heartbeat-process-node
	export HB_STACK_DIR=${HB_BENCH_STACK_DIR:-$repo/target/bench-stack}
	e2e/stack up --fresh --stop-when-exits $$ >&2
	operator=
	fixture=
	work=$(mktemp -d)
	trap 'bench_stop' EXIT
	eval "$(e2e/stack env)"
	kubectl apply --server-side -f crds/ >/dev/null
	kubectl wait --for=condition=Established crd/heartbeatmonitors.heartbeat.dev --timeout=60s >/dev/null
}

bench_namespaces() {
	kubectl create namespace heartbeat-system >/dev/null
	kubectl create namespace bench >/dev/null
	until kubectl -n heartbeat-system get serviceaccount default >/dev/null 2>&1; do sleep 0.5; done
	kubectl apply -f operator/deploy/rbac.yaml >/dev/null
	kubectl -n bench create secret generic kafka --from-literal=bootstrap.servers="$KAFKA_BOOTSTRAP" >/dev/null
}

bench_stop() {
	[ -z "${operator:-}" ] || { kill "$operator" 2>/dev/null || true; wait "$operator" 2>/dev/null || true; }
	# Closing its stdin stops the fixture, which deletes what it made.
	[ -z "${fixture:-}" ] || { exec {fixture_in}>&-; wait "$fixture" 2>/dev/null || true; }
	e2e/stack down >/dev/null 2>&1 || true
	rm -rf "${work:?}"
}

# The release operator through the e2e fixture (extra operator flags in "$@");
# returns once it serves, with its HB_OP_* assignments exported.
bench_fixture_start() {
	mkfifo "$work/fixture.in"
	target/release/operator-fixture --bin target/release/heartbeat-operator \
		--log "${HEARTBEAT_OPERATOR_LOG:-warn}" -- "$@" <"$work/fixture.in" >"$work/fixture.env" 2>"$work/fixture.log" &
	fixture=$!
	# Held open until bench_stop: the fixture runs until its stdin closes.
	exec {fixture_in}>"$work/fixture.in"
	until grep -qx 'HB_OP_READY=1' "$work/fixture.env"; do
		kill -0 "$fixture" 2>/dev/null || { cat "$work/fixture.log"; return 1; }
		sleep 0.2
	done
	set -a
	. "$work/fixture.env"
	set +a
}

# $1: the spec lines after topic, interval and Secret (indented two spaces).
bench_monitor() {
	local label=${HB_OP_MONITOR_LABEL:-}
	kubectl -n "${HB_OP_APP_NAMESPACE:-bench}" apply -f - >/dev/null <<YAML
apiVersion: heartbeat.dev/v1alpha1
kind: HeartbeatMonitor
metadata: {name: ingest, labels: {${label:+"${label%%=*}": "${label#*=}"}}}
spec:
  topic: heartbeats
  intervalSeconds: 10
  brokerSecretRef: {name: kafka}
$1
YAML
}

# Starts the operator (extra flags in "$@"); returns once /readyz answers.
bench_operator_start() {
	local token
	token=$(kubectl -n heartbeat-system create token heartbeat-operator --duration 2h)
	cat >"$work/kubeconfig" <<KC
apiVersion: v1
kind: Config
clusters: [{name: local, cluster: {server: "$KUBE_APISERVER", certificate-authority: "$(kubectl config view --raw --minify -o jsonpath='{.clusters[0].cluster.certificate-authority}')"}}]
users: [{name: operator, user: {token: "$token"}}]
contexts: [{name: operator, context: {cluster: local, user: operator}}]
current-context: operator
KC
	HEARTBEAT_OPERATOR_LOG=${HEARTBEAT_OPERATOR_LOG:-warn} e2e/stack exec -- target/release/heartbeat-operator --kubeconfig "$work/kubeconfig" \
		--webhook-addr "$HB_STACK_ADDR:9443" --admin-addr "$HB_STACK_ADDR:8080" \
		--webhook-url "https://$HB_STACK_ADDR:9443/mutate" "$@" >"$work/operator.log" 2>&1 &
	operator=$!
	until curl -sf --noproxy '*' "http://$HB_STACK_ADDR:8080/readyz" >/dev/null; do
		kill -0 "$operator" 2>/dev/null || { cat "$work/operator.log"; return 1; }
		sleep 0.2
	done
	kubectl -n heartbeat-system get secret heartbeat-operator-webhook-tls -o jsonpath='{.data.ca\.crt}' | base64 -d >"$work/ca.pem"
}

# A Deployment's pod as the API server sends it at admission: no name yet,
# 3 containers, labelled app=ingest (select it for an injection).
bench_review_json() {
	python3 - "$1" "${HB_OP_APP_NAMESPACE:-bench}" <<'PY'
import json, sys
def container(name, port):
    return {"name": name, "image": f"registry.example/{name}:1.4.2", "imagePullPolicy": "IfNotPresent",
            "args": ["--config=/etc/app/config.yaml", f"--listen=:{port}", "--log-level=info"],
            "ports": [{"name": "http", "containerPort": port, "protocol": "TCP"}],
            "env": [{"name": f"ENV_{i}", "value": f"value-{i}-" + "x" * 24} for i in range(8)]
                   + [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
            "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "256Mi"}},
            "livenessProbe": {"httpGet": {"path": "/healthz", "port": port}, "periodSeconds": 10},
            "readinessProbe": {"httpGet": {"path": "/ready", "port": port}, "periodSeconds": 5},
            "volumeMounts": [{"name": "config", "mountPath": "/etc/app"}, {"name": "cache", "mountPath": "/cache"}],
            "terminationMessagePath": "/dev/termination-log", "terminationMessagePolicy": "File"}
pod = {"apiVersion": "v1", "kind": "Pod",
       "metadata": {"generateName": "ingest-7d9f8b6c4-", "namespace": sys.argv[2],
                    "labels": {"app": "ingest", "pod-template-hash": "7d9f8b6c4", "team": "data", "tier": "backend"},
                    "annotations": {"prometheus.io/scrape": "true", "prometheus.io/port": "8080"},
                    "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "ingest-7d9f8b6c4",
                                         "uid": "8e1c0a9e-3f55-4a51-9d0e-2b8f0c6f1a11", "controller": True, "blockOwnerDeletion": True}]},
       "spec": {"containers": [container("ingest", 8080), container("uploader", 8081), container("metrics", 9102)],
                "volumes": [{"name": "config", "configMap": {"name": "ingest-config"}}, {"name": "cache", "emptyDir": {}}],
                "serviceAccountName": "default", "restartPolicy": "Always", "terminationGracePeriodSeconds": 30,
                "dnsPolicy": "ClusterFirst", "schedulerName": "default-scheduler", "securityContext": {}}}
review = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
          "request": {"uid": "bench-0001", "kind": {"group": "", "version": "v1", "kind": "Pod"},
                      "resource": {"group": "", "version": "v1", "resource": "pods"},
                      "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
                      "requestResource": {"group": "", "version": "v1", "resource": "pods"},
                      "namespace": sys.argv[2], "operation": "CREATE",
                      "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller",
                                   "groups": ["system:serviceaccounts", "system:authenticated"]},
                      "object": pod, "oldObject": None, "dryRun": False,
                      "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"}}}
open(sys.argv[1], "w").write(json.dumps(review))
print(f"AdmissionReview: {len(json.dumps(review))} bytes, {len(pod['spec']['containers'])} containers", file=sys.stderr)
PY
}
