#!/usr/bin/env bash
# Refreshes the vendored uPlot (the live page's charting library) from npm.
#
#   monitor/web/refresh-uplot.sh            re-fetch the pinned version and check it
#   monitor/web/refresh-uplot.sh 1.6.33     move the pin to 1.6.33 and vendor it
#
# The pin (version and the registry's sha512 integrity of the tarball) is in
# uplot.pin; the tarball is verified against it before anything is copied.
# The Go test TestVendoredUPlot checks the vendored files against the sha256
# sums this script writes, so a hand edit of the vendored files fails CI.
# Needs npm, node and tar; nothing else is downloaded.
set -euo pipefail
cd "$(dirname "$0")"
pin=uplot.pin
dest=static/vendor/uplot

version=$(awk '$1 == "version" {print $2}' "$pin")
integrity=$(awk '$1 == "integrity" {print $2}' "$pin")
if [ $# -ge 1 ]; then
  version=$1
  integrity=$(npm view "uplot@$version" dist.integrity)
  echo "pinning uplot@$version ($integrity)"
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
tgz=$(cd "$tmp" && npm pack --silent "uplot@$version")
got="sha512-$(node -e 'const c=require("crypto"),f=require("fs");process.stdout.write(c.createHash("sha512").update(f.readFileSync(process.argv[1])).digest("base64"))' "$tmp/$tgz")"
if [ "$got" != "$integrity" ]; then
  echo "uplot@$version: tarball integrity $got, pinned $integrity" >&2
  exit 1
fi
tar -xzf "$tmp/$tgz" -C "$tmp"
mkdir -p "$dest"
cp "$tmp/package/dist/uPlot.iife.min.js" "$tmp/package/dist/uPlot.min.css" "$tmp/package/LICENSE" "$dest/"
{
  echo "# uPlot vendored by refresh-uplot.sh from npm; do not edit by hand."
  echo "version $version"
  echo "integrity $integrity"
  (cd "$dest" && sha256sum uPlot.iife.min.js uPlot.min.css LICENSE) | awk '{print "sha256", $2, $1}'
} > "$pin"
echo "vendored uplot@$version into $dest"
