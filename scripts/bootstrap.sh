#!/usr/bin/env bash
# Create (or refresh) the project venv: torch, detectron2, pinned deps, vild_d2 (editable).
#
# Idempotent: a stamp file records a hash of every install input; when it matches,
# the script exits at once. Environment knobs:
#   VENV=.venv                  where the venv lives
#   PYTHON=python3              interpreter used to create it
#   VILD_SYSTEM_SITE_PACKAGES=1 create the venv with --system-site-packages, so a
#                               torch/detectron2 built from source with CUDA ops is kept
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
D2_VERSION=0.7.2
D2_SHA256=491af0c7f79bdb2d178e46f6cb16a97c4ac968d45c41ea3f6b6435d59bbee561
STAMP="$VENV/.vild_stamp"

inputs_hash() {
  cat requirements.txt requirements-torch.txt setup.py scripts/bootstrap.sh \
    | sha256sum | cut -d' ' -f1
}
want=$(inputs_hash)
ready() { [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] && [ -x "$VENV/bin/python" ]; }
if ready; then
  exit 0
fi
# One bootstrap at a time (`make test` and `make demo` started together on a fresh machine): a
# second one waits for the first and then finds its stamp.
mkdir -p "$VENV"
exec 9>"$VENV/.bootstrap.lock"
flock 9
if ready; then
  exit 0
fi

log() { echo "[bootstrap] $*" >&2; }
if [ ! -x "$VENV/bin/python" ]; then
  log "creating $VENV with $PYTHON"
  if [ "${VILD_SYSTEM_SITE_PACKAGES:-0}" = 1 ]; then
    "$PYTHON" -m venv --system-site-packages "$VENV"
  else
    "$PYTHON" -m venv "$VENV"
  fi
fi
PY="$VENV/bin/python"
# pip warns about every package missing from the machine's extra local indexes; hide that noise.
pip_q() {
  "$PY" -m pip --disable-pip-version-check -q "$@" 2>&1 | { grep -v "is ignored: it is neither a file nor a directory" || true; }
  return "${PIPESTATUS[0]}"
}

if "$PY" -c "import torch, torchvision" 2>/dev/null; then
  log "keeping installed torch $("$PY" -c 'import torch; print(torch.__version__)')"
else
  log "installing torch (local wheels where available)"
  pip_q install -r requirements-torch.txt
fi

log "installing pinned requirements"
pip_q install -r requirements.txt
# lvis 0.5.3 depends on opencv-python (GUI build, needs libGL); we ship the
# headless build instead, so lvis goes in without its dependency list.
pip_q install --no-deps lvis==0.5.3

if "$PY" -c "import detectron2" 2>/dev/null; then
  log "keeping installed detectron2 $("$PY" -c 'import detectron2; print(detectron2.__version__)')"
else
  # detectron2 is not on PyPI; sal-detectron2 is upstream main packaged as a
  # cp310-only wheel whose Python code runs on 3.11 (its _C is not needed: torchvision
  # ops serve). pip refuses the tag on 3.11, so fetch it for 3.10, verify it, rename it.
  log "installing detectron2 (sal-detectron2==$D2_VERSION)"
  cache=${XDG_CACHE_HOME:-$HOME/.cache}/vild_d2/wheels
  mkdir -p "$cache"
  src="$cache/sal_detectron2-$D2_VERSION-cp310-none-any.whl"
  if [ ! -f "$src" ]; then
    tmp=$(mktemp -d)
    pip_q download --no-deps --only-binary=:all: --python-version 3.10 \
      -d "$tmp" "sal-detectron2==$D2_VERSION"
    mv "$tmp"/sal_detectron2-*.whl "$src"
    rm -rf "$tmp"
  fi
  got=$(sha256sum "$src" | cut -d' ' -f1)
  if [ "$got" != "$D2_SHA256" ]; then
    rm -f "$src"
    log "ERROR: detectron2 wheel sha256 $got != expected $D2_SHA256; deleted, rerun to refetch"
    exit 1
  fi
  dst="$cache/sal_detectron2-$D2_VERSION-py3-none-any.whl"
  cp "$src" "$dst"
  pip_q install --no-deps "$dst"
  # The wheel also installs a stray top-level `tools` package (detectron2's scripts);
  # remove it so it can never shadow this repository's tools/ directory.
  site=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  rm -rf "$site/tools"
fi

log "installing vild_d2 (editable)"
pip_q install --no-deps --no-build-isolation -e .
"$PY" -c "import vild_d2, detectron2, clip, lvis, fvcore, omegaconf"
echo "$want" > "$STAMP"
log "ready: $VENV"
