#!/usr/bin/env bash
# Checks that the tools the actormesh scripts need are installed, and installs the missing
# ones on Debian/Ubuntu.
#
#   scripts/ensure-deps.sh           cargo (Rust 1.95+) and protoc
#   scripts/ensure-deps.sh --etcd    the same, and for the test suite: etcd (v3.4+), openssl
#                                    (certificates of the etcd TLS test) and ip (iproute2, the
#                                    network namespaces of the partition test)
#
# On Debian/Ubuntu (apt-get present) a missing protoc or etcd is installed with apt-get
# (packages protobuf-compiler and etcd-server), as root or through sudo. Rust is never
# installed from here: it comes from rustup. On any other system, or when nothing can install,
# the script prints exactly what to install and exits non-zero.
set -euo pipefail

RUST_MIN="1.95"
ETCD_MIN="3.4"

want_etcd=0
for arg in "$@"; do
    case "$arg" in
        --etcd) want_etcd=1 ;;
        -h | --help)
            sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'
            exit 0
            ;;
        *)
            echo "ensure-deps: unknown argument: $arg (expected --etcd)" >&2
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

# version_at_least HAVE WANT: true when HAVE (x.y[.z]) >= WANT (x.y).
version_at_least() {
    local have_major have_minor want_major want_minor
    IFS=. read -r have_major have_minor _ <<<"$1"
    IFS=. read -r want_major want_minor _ <<<"$2"
    have_minor=${have_minor:-0}
    if [ "$have_major" -ne "$want_major" ]; then
        [ "$have_major" -gt "$want_major" ]
    else
        [ "$have_minor" -ge "$want_minor" ]
    fi
}

print_instructions() {
    cat >&2 <<MSG
ensure-deps: missing: $*
Install them, then run this script again:

  Rust (cargo, Rust $RUST_MIN or newer), on every system: rustup, from https://rustup.rs
      curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh
      rustup toolchain install $RUST_MIN
    (Linux distribution packages of cargo are usually too old.)

  protoc, etcd, openssl and ip (etcd v$ETCD_MIN or newer, openssl and iproute2: the test
  suite needs them, the demo does not):
    Debian / Ubuntu:   sudo apt-get update && sudo apt-get install protobuf-compiler etcd-server openssl iproute2
    Fedora (dnf):      sudo dnf install protobuf-compiler etcd openssl iproute
    macOS (Homebrew):  brew install protobuf etcd openssl   (the partition test needs Linux)
  If your distribution's etcd is older than v$ETCD_MIN, use a release from
  https://github.com/etcd-io/etcd/releases and put its etcd binary on the PATH.
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
            command -v "$tool" >/dev/null 2>&1 || still+=("$tool")
        done
        missing=(${still[@]+"${still[@]}"})
    fi
fi

if [ "${#missing[@]}" -gt 0 ]; then
    print_instructions "${missing[@]}"
    exit 1
fi

if [ "$want_etcd" -eq 1 ]; then
    etcd_version=$(etcd --version 2>/dev/null | awk '/etcd Version:/ {print $3}')
    if [ -z "$etcd_version" ] || ! version_at_least "$etcd_version" "$ETCD_MIN"; then
        say "etcd ${etcd_version:-of unknown version} found; v$ETCD_MIN or newer is needed"
        print_instructions "etcd v$ETCD_MIN+"
        exit 1
    fi
fi

say "ok: $(cargo --version), $(protoc --version)$([ "$want_etcd" -eq 1 ] && echo ", etcd $etcd_version")"
