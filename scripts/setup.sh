#!/usr/bin/env bash
# holdfast: install what the build, demo, bench and tests need. Idempotent:
# quiet and fast when everything is already there.
#   - Debian 12 packages: containerd 1.6, runc, busybox-static, CNI plugins,
#     build deps
#   - a second containerd (Debian 13's 1.7.24 .deb, unpacked into the cache,
#     not installed system-wide)
#   - a busybox rootfs folder for `ctr run --rootfs`
#   - CRIU 4.1.1 built from Debian 13's source, in /usr/local/sbin/criu
#     (Debian 12's criu 3.17 cannot dump on this kernel; see NOTES.md)
# Runs as root on Debian 12. Uses HOLDFAST_CACHE (default <repo>/.cache).
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

export DEBIAN_FRONTEND=noninteractive
APT_OPTS=(-y -q -o Dpkg::Use-Pty=0 -o APT::Sandbox::User=root)

# iptables: CRIU locks a container's network namespace with iptables-restore
# while it dumps. containernetworking-plugins: the CNI plugins (bridge,
# host-local, loopback in /usr/lib/cni) of the CRI tests' pod network.
PACKAGES=(containerd runc busybox-static pkgconf protobuf-compiler gcc libc6-dev
    jq util-linux procps iptables containernetworking-plugins)
# CRIU: Debian 13's source tarball of this version, checked against this sum.
HF_CRIU_VERSION=4.1.1
HF_CRIU_SHA256=f80a66cb3726bb2116266d4759ce3bcbfab7abdb6b6d430bf20dd41911717afe
# What building CRIU from source needs (Debian 12 packages).
CRIU_BUILD_DEPS=(build-essential pkgconf libprotobuf-c-dev protobuf-c-compiler libprotobuf-dev
    protobuf-compiler python3-protobuf libnl-3-dev libnet1-dev libcap-dev libbsd-dev
    libgnutls28-dev libnftables-dev uuid-dev xz-utils)

pkg_installed() {
    [[ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" == "install ok installed" ]]
}

# install_missing WHAT PACKAGE...: apt-get install the packages not installed.
install_missing() {
    local what="$1" missing=() p
    shift
    for p in "$@"; do
        pkg_installed "$p" || missing+=("$p")
    done
    ((${#missing[@]})) || return 0
    [[ "$(id -u)" == 0 ]] || hf_die "missing $what (${missing[*]}); run as root to install them"
    hf_log "setup: installing ${missing[*]}"
    apt-get "${APT_OPTS[@]}" update >/dev/null
    apt-get "${APT_OPTS[@]}" install --no-install-recommends "${missing[@]}" >/dev/null
}

install_packages() { install_missing packages "${PACKAGES[@]}"; }

check_rust() {
    if ! command -v cargo >/dev/null 2>&1; then
        if [[ -x "$HOME/.cargo/bin/cargo" ]]; then
            hf_die "cargo is in $HOME/.cargo/bin but not on PATH: export PATH=\"\$HOME/.cargo/bin:\$PATH\""
        fi
        hf_die "cargo not found: install the Rust toolchain (rustup) first"
    fi
}

# The archive URI of this machine's own Debian 12 (bookworm) source: the
# URIs: line of the deb822 entry whose Suites include bookworm, else the
# one-line sources.list form. Never hard-coded.
bookworm_uri() {
    local uri
    uri="$(awk '
        function flush() { if (isdeb && isbw && uri != "") { print uri; found = 1; exit } isdeb = isbw = 0; uri = "" }
        /^[[:space:]]*$/ { flush(); next }
        /^[[:space:]]*#/ { next }
        tolower($1) == "types:"  { for (i = 2; i <= NF; i++) if ($i == "deb") isdeb = 1 }
        tolower($1) == "suites:" { for (i = 2; i <= NF; i++) if ($i == "bookworm") isbw = 1 }
        tolower($1) == "uris:"   { uri = $2 }
        END { if (!found) flush() }
    ' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)"
    if [[ -z "$uri" && -r /etc/apt/sources.list ]]; then
        uri="$(awk '$1 == "deb" {
                for (i = 2; i <= NF; i++) if ($i !~ /^\[/ && $i !~ /\]$/) break
                if ($(i + 1) == "bookworm") { print $i; exit }
            }' /etc/apt/sources.list)"
    fi
    [[ -n "$uri" ]] || hf_die "no Debian 12 (bookworm) entry in /etc/apt/sources.list.d/*.sources or /etc/apt/sources.list"
    printf '%s\n' "${uri%/}"
}

# trixie_apt TYPE DIR: private apt options (in TRIXIE_APT) for Debian 13
# (trixie): a one-line source list of TYPE (deb or deb-src) on this
# machine's own archive, and its index, both in DIR; the index is updated.
# The machine's apt configuration is never changed.
TRIXIE_APT=()
trixie_apt() {
    local type="$1" apt_dir="$2" uri keyring
    uri="$(bookworm_uri)"
    keyring=/usr/share/keyrings/debian-archive-keyring.gpg
    [[ -r "$keyring" ]] || hf_die "$keyring missing (package debian-archive-keyring)"
    mkdir -p "$apt_dir/lists/partial"
    printf '%s [signed-by=%s] %s trixie main\n' "$type" "$keyring" "$uri" >"$apt_dir/sources.list"
    TRIXIE_APT=(-o "Dir::Etc::SourceList=$apt_dir/sources.list" -o Dir::Etc::SourceParts=/dev/null
        -o "Dir::State::Lists=$apt_dir/lists" -o Dir::Cache::pkgcache= -o Dir::Cache::srcpkgcache=
        -o APT::Sandbox::User=root -o Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false
        -o Acquire::IndexTargets::deb::DEP-11-icons::DefaultEnabled=false
        -o Acquire::IndexTargets::deb::DEP-11-icons-small::DefaultEnabled=false)
    apt-get -q "${TRIXIE_APT[@]}" update >/dev/null
}

# Debian 13's containerd, unpacked (dpkg -x) into $HF_CONTAINERD17_DIR.
fetch_containerd17() {
    local dest="$HF_CONTAINERD17_DIR" apt_dir version deb tmp
    if [[ -x "$dest/usr/bin/containerd" && -x "$dest/usr/bin/ctr" && -x "$dest/usr/bin/containerd-shim-runc-v2" ]] &&
        "$dest/usr/bin/containerd" --version >/dev/null 2>&1; then
        return 0
    fi
    hf_log "setup: fetching Debian 13's containerd $HF_CONTAINERD17_VERSION into $dest"
    apt_dir="$HOLDFAST_CACHE/apt-trixie"
    trixie_apt deb "$apt_dir"
    mkdir -p "$apt_dir/debs"
    version="$(apt-cache "${TRIXIE_APT[@]}" madison containerd |
        awk -F'|' -v want="$HF_CONTAINERD17_VERSION" '{ gsub(/ /, "", $2) } index($2, want) == 1 { print $2; exit }')"
    if [[ -z "$version" ]]; then
        version="$(apt-cache "${TRIXIE_APT[@]}" madison containerd | awk -F'|' '{ gsub(/ /, "", $2); print $2; exit }')"
        [[ -n "$version" ]] || hf_die "Debian 13 has no containerd package"
        hf_log "setup: WARNING: Debian 13 serves containerd $version, not $HF_CONTAINERD17_VERSION; using it"
    fi
    rm -f "$apt_dir/debs/"*.deb
    (cd "$apt_dir/debs" && apt-get -q "${TRIXIE_APT[@]}" download "containerd=$version" >/dev/null)
    deb="$(ls "$apt_dir/debs/"containerd_*.deb)"
    tmp="$dest.tmp.$$"
    rm -rf "$tmp"
    dpkg -x "$deb" "$tmp"
    "$tmp/usr/bin/containerd" --version >/dev/null ||
        hf_die "the unpacked containerd $version does not run"
    rm -rf "$dest"
    mv "$tmp" "$dest"
    rm -f "$deb"
    hf_log "setup: $("$dest/usr/bin/containerd" --version)"
}

# criu_version: the version of the installed $HF_CRIU ("" when none).
criu_version() {
    [[ -x "$HF_CRIU" ]] || return 0
    "$HF_CRIU" --version 2>/dev/null | awk '$1 == "Version:" { print $2; exit }'
}

# sha256_is FILE SUM: true when FILE exists and its sha256 is SUM.
sha256_is() {
    [[ -f "$1" ]] && [[ "$(sha256sum "$1" | awk '{ print $1 }')" == "$2" ]]
}

# CRIU $HF_CRIU_VERSION, built from Debian 13's source tarball (its sha256
# checked) and installed as $HF_CRIU. The tarball stays in the cache.
build_criu() {
    [[ "$(criu_version)" == "$HF_CRIU_VERSION" ]] && return 0
    [[ "$(id -u)" == 0 ]] || hf_die "CRIU $HF_CRIU_VERSION is not installed as $HF_CRIU; run as root to build it"
    hf_log "setup: building CRIU $HF_CRIU_VERSION from Debian 13's source into $HF_CRIU"
    install_missing "CRIU build dependencies" "${CRIU_BUILD_DEPS[@]}"
    local dir="$HOLDFAST_CACHE/criu" tarball version build
    tarball="$dir/criu_$HF_CRIU_VERSION.orig.tar.xz"
    mkdir -p "$dir"
    if ! sha256_is "$tarball" "$HF_CRIU_SHA256"; then
        rm -f "$tarball"
        trixie_apt deb-src "$HOLDFAST_CACHE/apt-trixie-src"
        version="$(apt-cache "${TRIXIE_APT[@]}" showsrc criu 2>/dev/null |
            awk -v want="$HF_CRIU_VERSION-" '$1 == "Version:" && index($2, want) == 1 { print $2; exit }')"
        [[ -n "$version" ]] || hf_die "Debian 13 has no source package of criu $HF_CRIU_VERSION"
        # apt may still fail on the .dsc after the tarball came: the sha256
        # below decides.
        (cd "$dir" && apt-get -q "${TRIXIE_APT[@]}" source --download-only "criu=$version" >/dev/null 2>&1) || true
        rm -f "$dir"/criu_*.dsc "$dir"/criu_*.debian.tar.*
        sha256_is "$tarball" "$HF_CRIU_SHA256" ||
            hf_die "criu_$HF_CRIU_VERSION.orig.tar.xz from Debian 13 is missing or its sha256 is not $HF_CRIU_SHA256"
    fi
    build="$dir/build.$$"
    rm -rf "$build"
    mkdir -p "$build"
    tar -xJf "$tarball" -C "$build" --strip-components=1
    if ! make -C "$build" -j"$(nproc)" criu >"$build.log" 2>&1; then
        tail -n 30 "$build.log" >&2
        rm -rf "$build"
        hf_die "building CRIU $HF_CRIU_VERSION failed (log: $build.log)"
    fi
    install -D -m 0755 "$build/criu/criu" "$HF_CRIU.tmp.$$"
    mv -f "$HF_CRIU.tmp.$$" "$HF_CRIU"
    rm -rf "$build" "$build.log"
    [[ "$(criu_version)" == "$HF_CRIU_VERSION" ]] ||
        hf_die "the installed $HF_CRIU does not report version $HF_CRIU_VERSION"
    hf_log "setup: $("$HF_CRIU" --version | head -n 1) installed as $HF_CRIU"
}

# A busybox-static rootfs: bin/busybox, a symlink per applet, the usual dirs.
build_rootfs() {
    local dest="$HF_ROOTFS" tmp applet
    [[ -x "$dest/bin/busybox" && -e "$dest/bin/sh" && -f "$dest/etc/passwd" ]] && return 0
    hf_log "setup: building the busybox rootfs in $dest"
    tmp="$dest.tmp.$$"
    rm -rf "$tmp"
    mkdir -p "$tmp"/{bin,etc,tmp,proc,sys,dev,root}
    chmod 1777 "$tmp/tmp"
    cp /bin/busybox "$tmp/bin/busybox"
    for applet in $("$tmp/bin/busybox" --list); do
        [[ "$applet" == busybox ]] || ln -s busybox "$tmp/bin/$applet"
    done
    printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' >"$tmp/etc/passwd"
    printf 'root:x:0:\nnogroup:x:65534:\n' >"$tmp/etc/group"
    rm -rf "$dest"
    mv "$tmp" "$dest"
}

main() {
    install_packages
    check_rust
    mkdir -p "$HOLDFAST_CACHE"
    fetch_containerd17
    build_rootfs
    build_criu
}

main "$@"
