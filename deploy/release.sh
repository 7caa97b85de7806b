#!/usr/bin/env bash
# Builds the release files: one self-contained `portcullis` per platform (server and CLI; the machine needs no .NET),
# ReadyToRun-compiled for a fast start, and SHA256SUMS beside them (docs/operations.md, "Installing the single file").
#   deploy/release.sh [--no-ready-to-run] [RID...]
# RIDs default to linux-x64 and linux-arm64. Files go to $DIST_DIR (default dist/): portcullis-VERSION-RID.
# --no-ready-to-run builds in about a quarter of the time and starts slower; the tests use it (PublishedFileTests).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ready_to_run=true
if [ "${1:-}" = "--no-ready-to-run" ]; then
    ready_to_run=false
    shift
fi
rids=("$@")
[ ${#rids[@]} -gt 0 ] || rids=(linux-x64 linux-arm64)
version=$(sed -n 's|.*<Version>\(.*\)</Version>.*|\1|p' src/Portcullis/Portcullis.csproj)
out=${DIST_DIR:-dist}
mkdir -p "$out"
files=()
for rid in "${rids[@]}"; do
    echo "release: portcullis $version for $rid (ReadyToRun: $ready_to_run)"
    staging=$(mktemp -d)
    dotnet publish src/Portcullis -c Release -r "$rid" -p:PublishSingleFile=true -p:PublishReadyToRun=$ready_to_run \
        -o "$staging" -v q -nologo
    name=portcullis-$version-$rid
    mv "$staging/portcullis" "$out/$name"
    rm -rf "$staging"
    files+=("$name")
    echo "release: $out/$name ($(du -h "$out/$name" | cut -f1))"
done
(cd "$out" && sha256sum "${files[@]}" > SHA256SUMS)
echo "release: $out/SHA256SUMS"
cat "$out/SHA256SUMS"
