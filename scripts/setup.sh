#!/usr/bin/env bash
# holdfast: install what the build, demo, bench and tests need. Idempotent:
# quiet and fast when everything is already there.
#   - Debian 12 packages: containerd 1.6, runc, busybox-static, build deps
#   - a second containerd (Debian 13's 1.7.24 .deb, unpacked into the cache,
#     not installed system-wide)
#   - a busybox rootfs folder for `ctr run --rootfs`
# Runs as root on Debian 12. Uses HOLDFAST_CACHE (default <repo>/.cache).
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

export DEBIAN_FRONTEND=noninteractive
APT_OPTS=(-y -q -o Dpkg::Use-Pty=0 -o APT::Sandbox::User=root)

PACKAGES=(containerd runc busybox-static pkgconf protobuf-compiler gcc libc6-dev
    jq util-linux procps)

pkg_installed() {
    [[ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" == "install ok installed" ]]
}

install_packages() {
    local missing=() p
    for p in "${PACKAGES[@]}"; do
        pkg_installed "$p" || missing+=("$p")
    done
    ((${#missing[@]})) || return 0
    [[ "$(id -u)" == 0 ]] || hf_die "missing packages (${missing[*]}); run as root to install them"
    hf_log "setup: installing ${missing[*]}"
    apt-get "${APT_OPTS[@]}" update >/dev/null
    apt-get "${APT_OPTS[@]}" install --no-install-recommends "${missing[@]}" >/dev/null
}

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

# Debian 13's containerd, unpacked (dpkg -x) into $HF_CONTAINERD17_DIR.
fetch_containerd17() {
    local dest="$HF_CONTAINERD17_DIR" apt_dir uri keyring version deb tmp
    if [[ -x "$dest/usr/bin/containerd" && -x "$dest/usr/bin/ctr" && -x "$dest/usr/bin/containerd-shim-runc-v2" ]] &&
        "$dest/usr/bin/containerd" --version >/dev/null 2>&1; then
        return 0
    fi
    hf_log "setup: fetching Debian 13's containerd $HF_CONTAINERD17_VERSION into $dest"
    uri="$(bookworm_uri)"
    keyring=/usr/share/keyrings/debian-archive-keyring.gpg
    [[ -r "$keyring" ]] || hf_die "$keyring missing (package debian-archive-keyring)"
    apt_dir="$HOLDFAST_CACHE/apt-trixie"
    mkdir -p "$apt_dir/lists/partial" "$apt_dir/debs"
    printf 'deb [signed-by=%s] %s trixie main\n' "$keyring" "$uri" >"$apt_dir/sources.list"
    local priv=(-o "Dir::Etc::SourceList=$apt_dir/sources.list" -o Dir::Etc::SourceParts=/dev/null
        -o "Dir::State::Lists=$apt_dir/lists" -o Dir::Cache::pkgcache= -o Dir::Cache::srcpkgcache=
        -o APT::Sandbox::User=root -o Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false
        -o Acquire::IndexTargets::deb::DEP-11-icons::DefaultEnabled=false
        -o Acquire::IndexTargets::deb::DEP-11-icons-small::DefaultEnabled=false)
    apt-get -q "${priv[@]}" update >/dev/null
    version="$(apt-cache "${priv[@]}" madison containerd |
        awk -F'|' -v want="$HF_CONTAINERD17_VERSION" '{ gsub(/ /, "", $2) } index($2, want) == 1 { print $2; exit }')"
    if [[ -z "$version" ]]; then
        version="$(apt-cache "${priv[@]}" madison containerd | awk -F'|' '{ gsub(/ /, "", $2); print $2; exit }')"
        [[ -n "$version" ]] || hf_die "Debian 13 has no containerd package"
        hf_log "setup: WARNING: Debian 13 serves containerd $version, not $HF_CONTAINERD17_VERSION; using it"
    fi
    rm -f "$apt_dir/debs/"*.deb
    (cd "$apt_dir/debs" && apt-get -q "${priv[@]}" download "containerd=$version" >/dev/null)
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
}

main "$@"
