# `e2e/stack install`: builds or resolves every pinned tool into $HB_TOOLS_DIR.
# Each tool has a stamp file holding the version it was built at; a tool whose
# stamp matches is skipped, so a warm cache needs no network at all.

stamp_ok() { [ "$(cat "$HB_TOOLS_DIR/stamps/$1" 2>/dev/null)" = "$2" ]; }
file_hash() { sha256sum "$1" | cut -c1-12; }
stamp_set() { mkdir -p "$HB_TOOLS_DIR/stamps"; printf '%s' "$2" >"$HB_TOOLS_DIR/stamps/$1"; }

go_env() {
	# Keep the module and build caches inside the tools cache so CI caches one directory.
	export GOMODCACHE="$HB_TOOLS_DIR/go/mod" GOCACHE="$HB_TOOLS_DIR/go/cache"
	export GOFLAGS="-buildvcs=false -mod=mod" CGO_ENABLED=0
}

install_kubernetes() {
	local want="$K8S_VERSION/$RECIPE_VERSION"
	stamp_ok kubernetes "$want" && [ -x "$TOOLS_BIN/kube-apiserver" ] && return 0
	log "building kube-apiserver, kube-controller-manager, kube-scheduler, kubectl $K8S_VERSION (slow on a cold cache)"
	go_env
	local src="$HB_TOOLS_DIR/src/kubernetes"
	rm -rf "$src" && mkdir -p "$src"
	(
		cd "$src"
		go mod init heartbeat.dev/e2e-tools/kubernetes >/dev/null 2>&1
		# k8s.io/kubernetes points its staging modules at ./staging; a wrapper
		# module must pin each to the published k8s.io/<name> release instead.
		local mod
		mod=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
		[ -f "$mod" ] || die "could not download k8s.io/kubernetes@$K8S_VERSION"
		{
			echo "require k8s.io/kubernetes $K8S_VERSION"
			echo "replace ("
			sed -n 's#^\s*\(k8s.io/[a-z0-9-]*\) => ./staging/src/.*#\1#p' "$mod" |
				grep -v '^k8s.io/sample-' |
				while read -r m; do echo "	$m => $m $K8S_STAGING_VERSION"; done
			echo ")"
		} >>go.mod
		local v=k8s.io/component-base/version c=k8s.io/client-go/pkg/version minor
		minor=$(echo "$K8S_VERSION" | cut -d. -f2)
		local ld="-s -w"
		for p in $v $c; do
			ld="$ld -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
		done
		mkdir -p "$TOOLS_BIN"
		go build -trimpath -ldflags "$ld" -o "$TOOLS_BIN/" \
			k8s.io/kubernetes/cmd/kube-apiserver \
			k8s.io/kubernetes/cmd/kube-controller-manager \
			k8s.io/kubernetes/cmd/kube-scheduler \
			k8s.io/kubernetes/cmd/kubectl
	) || die "building Kubernetes $K8S_VERSION failed (see the go output above)"
	stamp_set kubernetes "$want"
}

install_etcd() {
	local want="$ETCD_VERSION/$(file_hash "$E2E_DIR/tools/etcd/main.go")"
	stamp_ok etcd "$want" && [ -x "$TOOLS_BIN/etcd" ] && return 0
	log "building etcd $ETCD_VERSION"
	go_env
	local src="$HB_TOOLS_DIR/src/etcd"
	rm -rf "$src" && mkdir -p "$src"
	cp "$E2E_DIR/tools/etcd/main.go" "$src/"
	(
		cd "$src"
		go mod init heartbeat.dev/e2e-tools/etcd >/dev/null 2>&1
		go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" >/dev/null
		mkdir -p "$TOOLS_BIN"
		go build -trimpath -ldflags "-s -w" -o "$TOOLS_BIN/etcd" .
	) || die "building etcd $ETCD_VERSION failed"
	stamp_set etcd "$want"
}

install_helm() {
	local want="$HELM_VERSION/$RECIPE_VERSION"
	stamp_ok helm "$want" && [ -x "$TOOLS_BIN/helm" ] && return 0
	log "building helm $HELM_VERSION"
	go_env
	GOBIN="$TOOLS_BIN" GOFLAGS=-buildvcs=false go install -trimpath \
		-ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" \
		"helm.sh/helm/v3/cmd/helm@$HELM_VERSION" || die "building helm $HELM_VERSION failed"
	stamp_set helm "$want"
}

install_kafka() {
	local want="$KAFKA_VERSION/$KAFKA_SCALA_VERSION/$(file_hash "$E2E_DIR/tools/kafka/pom.xml")"
	stamp_ok kafka "$want" && [ -d "$KAFKA_HOME/libs" ] && return 0
	log "resolving Apache Kafka $KAFKA_VERSION from Maven Central"
	command -v mvn >/dev/null || die "mvn (Maven) is required to resolve Kafka"
	rm -rf "$KAFKA_HOME" && mkdir -p "$KAFKA_HOME/libs"
	mvn -q -B -f "$E2E_DIR/tools/kafka/pom.xml" \
		-Dmaven.repo.local="$HB_TOOLS_DIR/m2" \
		-Dkafka.version="$KAFKA_VERSION" -Dscala.version="$KAFKA_SCALA_VERSION" \
		dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$KAFKA_HOME/libs" ||
		die "resolving Kafka $KAFKA_VERSION with Maven failed"
	stamp_set kafka "$want"
}

install_debs() {
	# kcat for by-hand inspection and tests; cmake/libcurl/libsasl for rdkafka's build;
	# musl-tools (musl-gcc) for the static binaries (e2e/build-static);
	# promtool (Debian's prometheus), Alertmanager and amtool: the stack's alerting.
	local missing=()
	command -v kcat >/dev/null || missing+=(kcat)
	command -v cmake >/dev/null || missing+=(cmake)
	command -v musl-gcc >/dev/null || missing+=(musl-tools)
	dpkg -s libcurl4-openssl-dev >/dev/null 2>&1 || missing+=(libcurl4-openssl-dev)
	dpkg -s libsasl2-dev >/dev/null 2>&1 || missing+=(libsasl2-dev)
	dpkg -s libssl-dev >/dev/null 2>&1 || missing+=(libssl-dev)
	command -v promtool >/dev/null || missing+=(prometheus)
	command -v prometheus-alertmanager >/dev/null || missing+=(prometheus-alertmanager)
	[ ${#missing[@]} -eq 0 ] && return 0
	log "installing Debian packages: ${missing[*]}"
	local sudo=""
	[ "$(id -u)" -eq 0 ] || sudo=sudo
	$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null ||
		die "apt-get install ${missing[*]} failed"
}

# Prometheus itself is built from its Go module: Debian's package is built
# without Kubernetes service discovery, which the chart's ServiceMonitor
# means. Only that discovery is compiled in (Prometheus's own build tags).
install_prometheus() {
	local want="$PROMETHEUS_VERSION/$RECIPE_VERSION"
	stamp_ok prometheus "$want" && [ -x "$TOOLS_BIN/prometheus" ] && return 0
	log "building prometheus $PROMETHEUS_VERSION (Kubernetes discovery only)"
	go_env
	GOBIN="$TOOLS_BIN" GOFLAGS=-buildvcs=false go install -trimpath \
		-tags remove_all_sd,enable_kubernetes_sd -ldflags "-s -w" \
		"github.com/prometheus/prometheus/cmd/prometheus@$PROMETHEUS_VERSION" ||
		die "building prometheus $PROMETHEUS_VERSION failed"
	stamp_set prometheus "$want"
}

# The Rust standard library for the static binaries' target (e2e/build-static).
install_rust_targets() {
	local triple=x86_64-unknown-linux-musl
	[ -d "$(rustc --print target-libdir --target "$triple" 2>/dev/null)" ] && return 0
	command -v rustup >/dev/null || die "the Rust target $triple is missing and there is no rustup to add it"
	log "adding the Rust target $triple"
	rustup target add "$triple" >/dev/null || die "rustup target add $triple failed"
}

# cargo-fuzz for e2e/fuzz, in a directory of its own version (cargo install
# keeps its bookkeeping there), linked into $TOOLS_BIN. The fuzz targets need
# a nightly toolchain (-Zsanitizer), so its absence fails here, not mid-suite.
install_cargo_fuzz() {
	rustup run nightly rustc --version >/dev/null 2>&1 ||
		die "no nightly Rust toolchain: e2e/fuzz runs \`cargo +nightly fuzz\`; install one with \`rustup toolchain install nightly --profile minimal\`"
	local want="$CARGO_FUZZ_VERSION/$RECIPE_VERSION" root="$HB_TOOLS_DIR/cargo-fuzz-$CARGO_FUZZ_VERSION"
	stamp_ok cargo-fuzz "$want" && [ -x "$TOOLS_BIN/cargo-fuzz" ] && return 0
	log "building cargo-fuzz $CARGO_FUZZ_VERSION"
	cargo install -q cargo-fuzz --locked --version "$CARGO_FUZZ_VERSION" --root "$root" ||
		die "cargo install cargo-fuzz $CARGO_FUZZ_VERSION failed"
	mkdir -p "$TOOLS_BIN"
	ln -sf "$root/bin/cargo-fuzz" "$TOOLS_BIN/cargo-fuzz"
	stamp_set cargo-fuzz "$want"
}

# What must already be on the machine (the project's machines have it all).
require_prereqs() {
	local t missing=()
	for t in go java mvn python3 openssl cargo curl ip nsenter setsid sysctl; do command -v "$t" >/dev/null || missing+=("$t"); done
	[ ${#missing[@]} -eq 0 ] || die "missing on this machine: ${missing[*]} (Go 1.26, Java 17 with Maven, Python 3, openssl, curl, Rust, iproute2, util-linux and procps are prerequisites)"
}

# The Go module and build caches (several GiB) only serve a rebuild after a
# version bump; the binaries are what a warm cache needs, so CI caches little.
prune_go_caches() {
	[ -d "$HB_TOOLS_DIR/go" ] || return 0
	GOMODCACHE="$HB_TOOLS_DIR/go/mod" GOCACHE="$HB_TOOLS_DIR/go/cache" go clean -cache -modcache >/dev/null 2>&1 || true
	rm -rf "$HB_TOOLS_DIR/go" "$HB_TOOLS_DIR/src"
}

cmd_install() {
	require_prereqs
	mkdir -p "$TOOLS_BIN"
	install_debs
	install_rust_targets
	# Prometheus builds beside the rest: much of each Go install is waiting
	# on module downloads, which the other's compiling fills.
	local prom_log="$HB_TOOLS_DIR/prometheus-install.log"
	install_prometheus >"$prom_log" 2>&1 &
	local prom=$!
	install_kafka
	install_etcd
	install_kubernetes
	install_helm
	wait "$prom" || { tail -n 30 "$prom_log" >&2; die "building prometheus $PROMETHEUS_VERSION failed (log: $prom_log)"; }
	install_cargo_fuzz
	prune_go_caches
	log "tools ready in $HB_TOOLS_DIR"
}
