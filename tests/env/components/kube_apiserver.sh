# kube-apiserver on etcd, with RBAC and client-certificate authentication. Built from the
# Go module proxy through the wrapper module tests/env/kube/ (k8s.io/kubernetes with its
# staging modules replaced by their published twins; regenerate with kube/update.sh).
# The binaries of this file, kube_controller_manager.sh and kube_scheduler.sh (and
# kubectl) share the helpers below.
#
# Exports KUBECONFIG (admin, system:masters), SWITCHBOARD_TEST_KUBE_VERSION (v1.37.2),
# SWITCHBOARD_TEST_KUBE_API (https URL), SWITCHBOARD_TEST_KUBECTL (path of a kubectl of
# the same version).

SB_KUBE_BIN="$SB_CACHE/kubernetes-$KUBERNETES_VERSION-go-$SB_GO_TOOLS_KEY"
SB_KUBE_DIR="$SB_STATE/kube"
SB_KUBE_PKI="$SB_KUBE_DIR/pki"

# sb_kube_load_env: the endpoints earlier `envctl up` runs exported (etcd's URL, the API
# server's address), for a component started by a later run than the ones it needs.
sb_kube_load_env() {
    # shellcheck disable=SC1090
    [ -f "$SB_ENV_FILE" ] && source "$SB_ENV_FILE"
    return 0
}

# sb_kube_build COMPONENT BINARY: build k8s.io/kubernetes/cmd/BINARY into the cache with
# the version stamped the way Kubernetes' own release build does.
sb_kube_build() {
    local name="$1" bin="$2" kv="$KUBERNETES_VERSION" minor ld="-s -w" pkg
    grep -qE "^[[:space:]]*k8s\.io/kubernetes $kv( |\$)" "$SB_ENV_DIR/kube/go.mod" ||
        { sb_log "tests/env/kube/go.mod does not pin k8s.io/kubernetes $kv (versions.env); run tests/env/kube/update.sh"; return 1; }
    minor="${kv#v1.}"; minor="${minor%%.*}"
    for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
        ld+=" -X $pkg.gitVersion=$kv -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"
    done
    sb_go_build "$name" "$SB_KUBE_BIN/$bin" "$SB_GO_TOOLS" "k8s.io/kubernetes/cmd/$bin" "$ld"
}

# sb_kube_ca NAME CN: a self-signed EC P-256 certificate authority.
sb_kube_ca() {
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$SB_KUBE_PKI/$1.key" 2>/dev/null &&
    openssl req -x509 -new -key "$SB_KUBE_PKI/$1.key" -subj "/CN=$2" -days 30 -sha256 \
        -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" \
        -out "$SB_KUBE_PKI/$1.crt"
}

# sb_kube_cert CA NAME CN [O] [EXT]: an EC P-256 key and a certificate signed by CA.
sb_kube_cert() {
    local ca="$1" name="$2" cn="$3" org="${4:-}" ext="${5:-extendedKeyUsage=clientAuth}" subj
    subj="/CN=$cn"
    [ -n "$org" ] && subj="/O=$org$subj"
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$SB_KUBE_PKI/$name.key" 2>/dev/null &&
    openssl req -new -key "$SB_KUBE_PKI/$name.key" -subj "$subj" -out "$SB_KUBE_PKI/$name.csr" &&
    printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n%s\n' "$ext" > "$SB_KUBE_PKI/$name.ext" &&
    openssl x509 -req -in "$SB_KUBE_PKI/$name.csr" -CA "$SB_KUBE_PKI/$ca.crt" -CAkey "$SB_KUBE_PKI/$ca.key" \
        -CAcreateserial -days 30 -sha256 -extfile "$SB_KUBE_PKI/$name.ext" -out "$SB_KUBE_PKI/$name.crt" 2>/dev/null &&
    rm -f "$SB_KUBE_PKI/$name.csr" "$SB_KUBE_PKI/$name.ext"
}

# sb_kube_pki: fresh certificate authorities (cluster and front proxy), serving certificate,
# service-account key pair and client certificates for this run (cheap: EC keys).
sb_kube_pki() {
    rm -rf "$SB_KUBE_PKI"
    mkdir -p "$SB_KUBE_PKI"
    chmod 700 "$SB_KUBE_PKI"
    sb_kube_ca ca switchboard-test-ca &&
    sb_kube_ca front-proxy-ca switchboard-test-front-proxy-ca &&
    local bridge_san=""
    [ -n "$(sb_bridge_ip)" ] && bridge_san=",IP:$SB_BRIDGE_IP"
    sb_kube_cert ca apiserver kube-apiserver "" \
        "extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,IP:10.96.0.1$bridge_san,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local" &&
    sb_kube_cert ca apiserver-kubelet-client kube-apiserver-kubelet-client system:masters &&
    sb_kube_cert ca node "system:node:$SB_NODE_NAME" system:nodes &&
    sb_kube_cert ca kubelet-serving "system:node:$SB_NODE_NAME" system:nodes \
        "extendedKeyUsage=serverAuth
subjectAltName=IP:$SB_BRIDGE_IP,DNS:$SB_NODE_NAME" &&
    sb_kube_cert ca kube-proxy system:kube-proxy &&
    sb_kube_cert ca coredns system:coredns &&
    sb_kube_cert ca admin admin system:masters &&
    sb_kube_cert ca controller-manager system:kube-controller-manager &&
    sb_kube_cert ca scheduler system:kube-scheduler &&
    sb_kube_cert ca kwok kwok-controller system:masters &&
    sb_kube_cert front-proxy-ca front-proxy-client front-proxy-client &&
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$SB_KUBE_PKI/sa.key" 2>/dev/null &&
    openssl pkey -in "$SB_KUBE_PKI/sa.key" -pubout -out "$SB_KUBE_PKI/sa.pub" 2>/dev/null
}

# sb_kube_kubeconfig FILE CERT_NAME: a kubeconfig for the API server with that client cert.
sb_kube_kubeconfig() {
    local file="$1" who="$2"
    cat > "$file" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: switchboard-test
  cluster:
    server: $SWITCHBOARD_TEST_KUBE_API
    certificate-authority-data: $(base64 -w0 < "$SB_KUBE_PKI/ca.crt")
users:
- name: $who
  user:
    client-certificate-data: $(base64 -w0 < "$SB_KUBE_PKI/$who.crt")
    client-key-data: $(base64 -w0 < "$SB_KUBE_PKI/$who.key")
contexts:
- name: $who@switchboard-test
  context:
    cluster: switchboard-test
    user: $who
current-context: $who@switchboard-test
EOF
    chmod 600 "$file"
}

# sb_kube_wait_healthz NAME [ADDR:]PORT PATH [SECONDS]: wait until https://ADDR:PORT/PATH (ADDR
# defaults to 127.0.0.1) says ok
# while the component's process lives. The API server's certificate is checked against the
# test CA; the controller-manager and scheduler serve self-signed ones (-k).
sb_kube_wait_healthz() {
    local name="$1" hostport="$2" path="$3" limit="${4:-120}" i tls=(--cacert "$SB_KUBE_PKI/ca.crt")
    case "$hostport" in *:*) ;; *) hostport="127.0.0.1:$hostport" ;; esac
    [ "$name" = kube_apiserver ] || tls=(-k)
    for i in $(seq 1 $((limit * 5))); do
        sb_alive "$name" || { sb_log "$name exited"; return 1; }
        if [ "$(curl -sS --max-time 2 "${tls[@]}" --cert "$SB_KUBE_PKI/admin.crt" \
                --key "$SB_KUBE_PKI/admin.key" "https://$hostport/$path" 2>/dev/null)" = ok ]; then
            return 0
        fi
        sleep 0.2
    done
    sb_log "$name did not answer ok on /$path within ${limit}s"
    return 1
}

kube_apiserver_install() {
    sb_apt openssl curl || return 1
    sb_kube_build kube_apiserver kube-apiserver || return 1
    sb_kube_build kube_apiserver kubectl
}

kube_apiserver_start() {
    local port
    sb_kube_load_env
    [ -n "${SWITCHBOARD_TEST_ETCD_URL:-}" ] || { sb_log "kube_apiserver needs etcd: envctl up etcd kube_apiserver"; return 1; }
    sb_alive etcd || { sb_log "etcd is not running"; return 1; }
    sb_kube_pki || { sb_log "could not generate the test PKI"; return 1; }
    port="$(sb_free_port)"
    mkdir -p "$SB_KUBE_DIR/apiserver"
    # With the pod bridge up (components/bridge.sh), the API server listens on the bridge
    # address and advertises it: the `kubernetes` Service then has a real endpoint that
    # pods reach through kube-proxy, and the host reaches it there too. Without the bridge
    # it stays on loopback with no endpoint (an Endpoints object may not hold a loopback
    # address). The front-proxy (requestheader) flags let the controller manager and
    # scheduler authenticate requests to their own ports as kubeadm's do. The API server
    # reaches kubelets by their InternalIP (never a host name the machine's resolver would
    # be asked for), checks their serving certificate and shows its own client certificate.
    local addr=127.0.0.1 reconciler=none
    if [ -n "$(sb_bridge_ip)" ]; then addr="$SB_BRIDGE_IP"; reconciler=lease; fi
    sb_spawn kube_apiserver "$SB_KUBE_BIN/kube-apiserver" \
        --etcd-servers="$SWITCHBOARD_TEST_ETCD_URL" \
        --bind-address="$addr" \
        --advertise-address="$addr" \
        --kubelet-preferred-address-types=InternalIP \
        --kubelet-certificate-authority="$SB_KUBE_PKI/ca.crt" \
        --kubelet-client-certificate="$SB_KUBE_PKI/apiserver-kubelet-client.crt" \
        --kubelet-client-key="$SB_KUBE_PKI/apiserver-kubelet-client.key" \
        --secure-port="$port" \
        --cert-dir="$SB_KUBE_DIR/apiserver" \
        --tls-cert-file="$SB_KUBE_PKI/apiserver.crt" \
        --tls-private-key-file="$SB_KUBE_PKI/apiserver.key" \
        --client-ca-file="$SB_KUBE_PKI/ca.crt" \
        --requestheader-client-ca-file="$SB_KUBE_PKI/front-proxy-ca.crt" \
        --requestheader-allowed-names=front-proxy-client \
        --requestheader-username-headers=X-Remote-User \
        --requestheader-group-headers=X-Remote-Group \
        --requestheader-extra-headers-prefix=X-Remote-Extra- \
        --proxy-client-cert-file="$SB_KUBE_PKI/front-proxy-client.crt" \
        --proxy-client-key-file="$SB_KUBE_PKI/front-proxy-client.key" \
        --authorization-mode=Node,RBAC \
        --service-account-issuer=https://kubernetes.default.svc.cluster.local \
        --service-account-key-file="$SB_KUBE_PKI/sa.pub" \
        --service-account-signing-key-file="$SB_KUBE_PKI/sa.key" \
        --service-cluster-ip-range=10.96.0.0/16 \
        --endpoint-reconciler-type="$reconciler" \
        --allow-privileged=true \
        --profiling=false \
        --v=0
    sb_export SWITCHBOARD_TEST_KUBE_API "https://$addr:$port"
    sb_kube_wait_healthz kube_apiserver "$addr:$port" readyz 180 || return 1
    sb_kube_kubeconfig "$SB_KUBE_DIR/kubeconfig" admin
    sb_export KUBECONFIG "$SB_KUBE_DIR/kubeconfig"
    sb_export SWITCHBOARD_TEST_KUBE_VERSION "$KUBERNETES_VERSION"
    sb_export SWITCHBOARD_TEST_KUBECTL "$SB_KUBE_BIN/kubectl"
}
