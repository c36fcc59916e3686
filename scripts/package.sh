#!/bin/bash
# The Debian package (cargo-deb): weir and nic-config, the systemd unit, the manual page and
# shell completions. Prints the path of the .deb; with --check, also takes it apart and runs
# what it installs.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo-deb >/dev/null 2>&1 || cargo install cargo-deb --locked --quiet
cargo build --release --locked --bins -p weir -p nic-config
out=target/package
mkdir -p "$out"
target/release/weir man >"$out/weir.1"
target/release/weir completions bash >"$out/weir.bash"
target/release/weir completions zsh >"$out/_weir"
target/release/weir completions fish >"$out/weir.fish"
deb=$(cargo deb --no-build --strip --locked -p weir 2>&1 | tail -n 1)
[ -f "$deb" ] || { echo "cargo deb made no package: $deb" >&2; exit 1; }
echo "$deb"
[ "${1:-}" = --check ] || exit 0

# Its contents: every file where Debian looks for it.
contents=$(dpkg-deb --contents "$deb")
for f in ./usr/bin/weir ./usr/bin/nic-config ./lib/systemd/system/weir.service \
  ./usr/share/man/man1/weir.1 ./usr/share/bash-completion/completions/weir \
  ./usr/share/zsh/vendor-completions/_weir ./usr/share/fish/vendor_completions.d/weir.fish; do
  grep -qE " ${f//./\\.}(\.gz)?$" <<<"$contents" || { echo "missing from the package: $f" >&2; exit 1; }
done
# Its control file: the DPDK libraries weir links found by dpkg-shlibdeps.
dpkg-deb --field "$deb" Depends | grep -q librte || { echo "no DPDK dependency in Depends" >&2; exit 1; }
# What it installs runs.
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
dpkg-deb --extract "$deb" "$root"
"$root/usr/bin/weir" --version
"$root/usr/bin/nic-config" --help >/dev/null
man_page=$(ls "$root"/usr/share/man/man1/weir.1*)
case "$man_page" in *.gz) zcat "$man_page" ;; *) cat "$man_page" ;; esac | grep -q '^\.TH weir 1'
bash -n "$root/usr/share/bash-completion/completions/weir"
echo "package checked: $deb"
