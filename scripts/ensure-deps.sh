#!/usr/bin/env bash
# Checks that the tools the actormesh scripts need are installed, and installs the missing
# ones on Debian/Ubuntu.
#
#   scripts/ensure-deps.sh           cargo (Rust 1.95+) and protoc
#   scripts/ensure-deps.sh --etcd    the same, and for the test suite: etcd (v3.4+), openssl
#                                    (certificates of the etcd TLS test), ip (iproute2, the
#                                    network namespaces of the partition test), PostgreSQL's
#                                    initdb and postgres (the PostgreSQL store tests; found
#                                    in $PG_BIN, on PATH or in /usr/lib/postgresql/*/bin),
#                                    cargo-generate (0.23.7+, renders the service template),
#                                    promtool (Debian's prometheus: lints the metrics),
#                                    chromium (renders the dashboard in a test) and
#                                    kubernetes-validate (as with --deploy)
#   scripts/ensure-deps.sh --deploy  also kubernetes-validate 1.37.0 (PyPI), which checks the
#                                    Kubernetes manifests offline (scripts/validate-deploy.sh),
#                                    in the virtual environment
#                                    ${XDG_CACHE_HOME:-~/.cache}/actormesh/venv-k8s
#   scripts/ensure-deps.sh --bench   also wrk, the HTTP load generator of the gateway
#                                    benchmark (scripts/bench-gateway.sh), and valgrind,
#                                    which counts the instructions of the metrics benchmark
#                                    (scripts/bench-metrics-instructions.sh)
#
# On Debian/Ubuntu (apt-get present) a missing protoc, etcd, PostgreSQL, wrk or valgrind is
# installed with apt-get (packages protobuf-compiler, etcd-server, postgresql, wrk, valgrind), as root or
# through sudo.
# The tests start their own PostgreSQL servers: the one the package may start is not used.
# A missing or older cargo-generate is built there with `cargo install cargo-generate
# --version 0.23.7 --locked` (a few minutes), after apt-get has installed what that build
# needs (a C compiler, pkg-config and the OpenSSL headers). kubernetes-validate is installed
# with pip into its virtual environment (created with python3 -m venv; on Debian/Ubuntu
# apt-get installs python3 and python3-venv first if missing), on any system with Python 3:
# installing needs PyPI, validating then works offline. Rust is never installed from
# here: it comes from rustup. On any other system, or when nothing can install, the script
# prints exactly what to install and exits non-zero.
set -euo pipefail

RUST_MIN="1.95"
ETCD_MIN="3.4"
# The cargo-generate release installed when missing, with its own Cargo.lock (--locked): it
# builds with Rust 1.95, while a plain `cargo install cargo-generate` resolves dependencies
# that need Rust 1.97. The template asks for this version or newer.
CARGO_GENERATE_VERSION="0.23.7"
# The kubernetes-validate release that checks the manifests of deploy/k8s
# (scripts/validate-deploy.sh reads this line): it bundles the Kubernetes JSON schemas, so
# validating needs no network. Its own dependencies are whatever pip resolves for it.
KUBERNETES_VALIDATE_VERSION="1.37.0"
K8S_VALIDATE_VENV="${XDG_CACHE_HOME:-$HOME/.cache}/actormesh/venv-k8s"

want_etcd=0
want_bench=0
want_deploy=0
for arg in "$@"; do
    case "$arg" in
        --etcd) want_etcd=1 want_deploy=1 ;;
        --deploy) want_deploy=1 ;;
        --bench) want_bench=1 ;;
        -h | --help)
            sed -n '2,35p' "$0" | sed 's/^# \{0,1\}//'
            exit 0
            ;;
        *)
            echo "ensure-deps: unknown argument: $arg (expected --etcd, --deploy or --bench)" >&2
            exit 2
            ;;
    esac
done

# Empty arrays are expanded as ${a[@]+"${a[@]}"}: bash 3.2 (macOS) treats "${a[@]}" of an
# empty array as unbound under `set -u`.

# rustup installs cargo in ~/.cargo/bin, which a non-login shell may not have on its PATH.
if ! command -v cargo >/dev/null 2>&1 && [ -x "${CARGO_HOME:-$HOME/.cargo}/bin/cargo" ]; then
    export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
fi

say() { echo "ensure-deps: $*" >&2; }

# version_at_least HAVE WANT: true when HAVE (x.y[.z]) >= WANT (x.y[.z]); a missing part is 0.
version_at_least() {
    local have want i
    IFS=. read -r -a have <<<"$1"
    IFS=. read -r -a want <<<"$2"
    for i in 0 1 2; do
        # Digits only: "3-rc1" counts as 3.
        local h=${have[$i]:-0} w=${want[$i]:-0}
        h=${h%%[!0-9]*}
        w=${w%%[!0-9]*}
        h=${h:-0}
        w=${w:-0}
        if [ "$h" -ne "$w" ]; then
            [ "$h" -gt "$w" ]
            return
        fi
    done
}

# Whether PostgreSQL's server binaries are there where the test kit looks for them (its
# Postgres::start): $PG_BIN if set, else PATH, else Debian's /usr/lib/postgresql/*/bin.
have_postgres() {
    if [ -n "${PG_BIN:-}" ]; then
        [ -x "$PG_BIN/initdb" ] && [ -x "$PG_BIN/postgres" ]
        return
    fi
    command -v initdb >/dev/null 2>&1 && return 0
    local initdb
    for initdb in /usr/lib/postgresql/*/bin/initdb; do
        [ -x "$initdb" ] && return 0
    done
    return 1
}

# The version of kubernetes-validate in its virtual environment ("1.37.0"), or nothing.
kubernetes_validate_version() {
    { "$K8S_VALIDATE_VENV/bin/kubernetes-validate" --version 2>/dev/null || true; } | awk '{print $NF}'
}

# Whether python3 can make a virtual environment with pip in it (Debian ships the venv
# module's ensurepip apart, in python3-venv).
have_python_venv() {
    python3 -c 'import venv, ensurepip' >/dev/null 2>&1
}

# The version of the installed cargo-generate ("cargo generate-generate 0.23.7"), or nothing.
cargo_generate_version() {
    { cargo generate --version 2>/dev/null || true; } | awk '{print $NF}'
}

print_instructions() {
    cat >&2 <<MSG
ensure-deps: missing: $*
Install them, then run this script again:

  Rust (cargo, Rust $RUST_MIN or newer), on every system: rustup, from https://rustup.rs
      curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh
      rustup toolchain install $RUST_MIN
    (Linux distribution packages of cargo are usually too old.)

  protoc, etcd, openssl, ip, PostgreSQL, promtool and Chromium (etcd v$ETCD_MIN or newer,
  openssl, iproute2, PostgreSQL, Prometheus' promtool (lints the metrics) and a headless
  Chromium (renders the dashboard): the test suite needs them, the demo does not):
    Debian / Ubuntu:   sudo apt-get update && sudo apt-get install protobuf-compiler etcd-server openssl iproute2 postgresql prometheus chromium
    Fedora (dnf):      sudo dnf install protobuf-compiler etcd openssl iproute postgresql-server golang-github-prometheus chromium
    macOS (Homebrew):  brew install protobuf etcd openssl postgresql prometheus chromium   (the partition test needs Linux)
  If your distribution's etcd is older than v$ETCD_MIN, use a release from
  https://github.com/etcd-io/etcd/releases and put its etcd binary on the PATH. If initdb
  and postgres are somewhere else than on the PATH or in /usr/lib/postgresql/*/bin, set
  PG_BIN to their directory.

  wrk (only for the gateway benchmark, scripts/bench-gateway.sh):
    Debian / Ubuntu:   sudo apt-get install wrk
    Fedora (dnf):      sudo dnf install wrk
    macOS (Homebrew):  brew install wrk

  valgrind (only for scripts/bench-metrics-instructions.sh; Linux):
    Debian / Ubuntu:   sudo apt-get install valgrind
    Fedora (dnf):      sudo dnf install valgrind

  kubernetes-validate $KUBERNETES_VALIDATE_VERSION (scripts/validate-deploy.sh and the test suite
  check the Kubernetes manifests with it), on every system once Python 3 is there:
      python3 -m venv $K8S_VALIDATE_VENV
      $K8S_VALIDATE_VENV/bin/pip install kubernetes-validate==$KUBERNETES_VALIDATE_VERSION
    Python 3 with its venv module:
    Debian / Ubuntu:   sudo apt-get install python3 python3-venv
    Fedora (dnf):      sudo dnf install python3
    macOS (Homebrew):  brew install python

  cargo-generate $CARGO_GENERATE_VERSION or newer (the test suite renders the service template
  with it), on every system, once its build needs are there:
      cargo install cargo-generate --version $CARGO_GENERATE_VERSION --locked
    Its build needs a C compiler, pkg-config and the OpenSSL headers:
    Debian / Ubuntu:   sudo apt-get install gcc pkg-config libssl-dev
    Fedora (dnf):      sudo dnf install gcc pkg-config openssl-devel
    macOS (Homebrew):  xcode-select --install; brew install pkg-config openssl@3
MSG
}

missing=()
rust_problem=""

if command -v cargo >/dev/null 2>&1; then
    cargo_version=$(cargo --version | awk '{print $2}')
    if ! version_at_least "$cargo_version" "$RUST_MIN"; then
        rust_problem="cargo $cargo_version is older than $RUST_MIN: run 'rustup update' (or 'rustup toolchain install $RUST_MIN')"
    fi
else
    missing+=("cargo")
fi
command -v protoc >/dev/null 2>&1 || missing+=("protoc")
if [ "$want_etcd" -eq 1 ]; then
    command -v etcd >/dev/null 2>&1 || missing+=("etcd")
    command -v openssl >/dev/null 2>&1 || missing+=("openssl")
    # `ip` (iproute2) lets the partition test build its network namespaces.
    command -v ip >/dev/null 2>&1 || missing+=("ip")
    # initdb and postgres (PostgreSQL's server) start the PostgreSQL store tests' servers.
    have_postgres || missing+=("postgres")
    # promtool lints the admin listener's metrics (Debian's prometheus package).
    command -v promtool >/dev/null 2>&1 || missing+=("promtool")
    # Headless Chromium renders the dashboard in the cluster tests.
    command -v chromium >/dev/null 2>&1 || missing+=("chromium")
fi

if [ "$want_bench" -eq 1 ]; then
    command -v wrk >/dev/null 2>&1 || missing+=("wrk")
    command -v valgrind >/dev/null 2>&1 || missing+=("valgrind")
fi

# kubernetes-validate is installed with pip below, once python3 and its venv module are there.
want_kubernetes_validate=0
if [ "$want_deploy" -eq 1 ] \
    && [ "$(kubernetes_validate_version)" != "$KUBERNETES_VALIDATE_VERSION" ]; then
    want_kubernetes_validate=1
    if ! command -v python3 >/dev/null 2>&1; then
        missing+=("python3")
    elif ! have_python_venv; then
        missing+=("python3-venv")
    fi
fi

# On Debian/Ubuntu, cargo-generate is built with cargo below, once apt-get has installed the
# missing ones of its build needs; elsewhere it is one more missing tool.
want_cargo_generate=0
if [ "$want_etcd" -eq 1 ] && [ -z "$rust_problem" ] && command -v cargo >/dev/null 2>&1; then
    have_cargo_generate=$(cargo_generate_version)
    if [ -z "$have_cargo_generate" ] \
        || ! version_at_least "$have_cargo_generate" "$CARGO_GENERATE_VERSION"; then
        if [ -n "$have_cargo_generate" ]; then
            say "cargo-generate $have_cargo_generate is older than $CARGO_GENERATE_VERSION"
        fi
        if command -v apt-get >/dev/null 2>&1; then
            want_cargo_generate=1
            command -v cc >/dev/null 2>&1 || missing+=("cc")
            command -v pkg-config >/dev/null 2>&1 || missing+=("pkg-config")
            if ! pkg-config --exists openssl 2>/dev/null; then
                missing+=("openssl-headers")
            fi
        else
            missing+=("cargo-generate")
        fi
    fi
fi

if [ -n "$rust_problem" ]; then
    say "$rust_problem"
    exit 1
fi

# The missing tools apt-get can install, as Debian package names.
apt_packages=()
for tool in ${missing[@]+"${missing[@]}"}; do
    case "$tool" in
        protoc) apt_packages+=("protobuf-compiler") ;;
        etcd) apt_packages+=("etcd-server") ;;
        openssl) apt_packages+=("openssl") ;;
        ip) apt_packages+=("iproute2") ;;
        postgres) apt_packages+=("postgresql") ;;
        wrk) apt_packages+=("wrk") ;;
        valgrind) apt_packages+=("valgrind") ;;
        promtool) apt_packages+=("prometheus") ;;
        chromium) apt_packages+=("chromium") ;;
        cc) apt_packages+=("gcc" "libc6-dev") ;;
        pkg-config) apt_packages+=("pkg-config") ;;
        openssl-headers) apt_packages+=("libssl-dev") ;;
        python3) apt_packages+=("python3" "python3-venv") ;;
        python3-venv) apt_packages+=("python3-venv") ;;
    esac
done

if [ "${#apt_packages[@]}" -gt 0 ]; then
    if command -v apt-get >/dev/null 2>&1; then
        sudo=()
        if [ "$(id -u)" -ne 0 ]; then
            if command -v sudo >/dev/null 2>&1; then
                sudo=(sudo)
            else
                say "not root and no sudo: cannot run apt-get"
                print_instructions "${missing[@]}"
                exit 1
            fi
        fi
        say "installing with apt-get: ${apt_packages[*]}"
        ${sudo[@]+"${sudo[@]}"} apt-get update
        ${sudo[@]+"${sudo[@]}"} env DEBIAN_FRONTEND=noninteractive \
            apt-get install -y --no-install-recommends "${apt_packages[@]}"
        hash -r
        still=()
        for tool in ${missing[@]+"${missing[@]}"}; do
            case "$tool" in
                openssl-headers) pkg-config --exists openssl 2>/dev/null || still+=("$tool") ;;
                postgres) have_postgres || still+=("$tool") ;;
                python3-venv) have_python_venv || still+=("$tool") ;;
                *) command -v "$tool" >/dev/null 2>&1 || still+=("$tool") ;;
            esac
        done
        missing=(${still[@]+"${still[@]}"})
    fi
fi

if [ "${#missing[@]}" -gt 0 ]; then
    print_instructions "${missing[@]}"
    exit 1
fi

if [ "$want_cargo_generate" -eq 1 ]; then
    say "installing cargo-generate $CARGO_GENERATE_VERSION: cargo install cargo-generate --version $CARGO_GENERATE_VERSION --locked"
    if ! cargo install cargo-generate --version "$CARGO_GENERATE_VERSION" --locked; then
        say "cargo install cargo-generate failed"
        print_instructions "cargo-generate $CARGO_GENERATE_VERSION+"
        exit 1
    fi
    hash -r
    have_cargo_generate=$(cargo_generate_version)
    if [ -z "$have_cargo_generate" ] \
        || ! version_at_least "$have_cargo_generate" "$CARGO_GENERATE_VERSION"; then
        say "installed cargo-generate $CARGO_GENERATE_VERSION, but \`cargo generate\` runs ${have_cargo_generate:-nothing}: is \$CARGO_HOME/bin first on the PATH?"
        exit 1
    fi
fi

if [ "$want_kubernetes_validate" -eq 1 ]; then
    say "installing kubernetes-validate $KUBERNETES_VALIDATE_VERSION into $K8S_VALIDATE_VENV (pip, from PyPI)"
    # --clear: a venv left by an interrupted run, or holding another version, starts afresh.
    if ! { mkdir -p "$(dirname "$K8S_VALIDATE_VENV")" \
        && python3 -m venv --clear "$K8S_VALIDATE_VENV" \
        && "$K8S_VALIDATE_VENV/bin/pip" install --quiet --disable-pip-version-check \
            "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"; }; then
        say "installing kubernetes-validate failed"
        print_instructions "kubernetes-validate $KUBERNETES_VALIDATE_VERSION"
        exit 1
    fi
    have_kubernetes_validate=$(kubernetes_validate_version)
    if [ "$have_kubernetes_validate" != "$KUBERNETES_VALIDATE_VERSION" ]; then
        say "installed kubernetes-validate $KUBERNETES_VALIDATE_VERSION, but $K8S_VALIDATE_VENV/bin/kubernetes-validate reports ${have_kubernetes_validate:-nothing}"
        exit 1
    fi
fi

if [ "$want_etcd" -eq 1 ]; then
    etcd_version=$(etcd --version 2>/dev/null | awk '/etcd Version:/ {print $3}')
    if [ -z "$etcd_version" ] || ! version_at_least "$etcd_version" "$ETCD_MIN"; then
        say "etcd ${etcd_version:-of unknown version} found; v$ETCD_MIN or newer is needed"
        print_instructions "etcd v$ETCD_MIN+"
        exit 1
    fi
fi

say "ok: $(cargo --version), $(protoc --version)$([ "$want_etcd" -eq 1 ] && echo ", etcd $etcd_version, cargo-generate $(cargo_generate_version)")$([ "$want_deploy" -eq 1 ] && echo ", kubernetes-validate $(kubernetes_validate_version)")"
