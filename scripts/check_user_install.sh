#!/usr/bin/env bash
# Show that `pip install -e REPO` keeps a GPU user's torch, torchvision, numpy and OpenCV.
#
# Builds a throw-away venv in a temp dir standing in for a user's environment: torch and
# torchvision as requirements-torch.txt pins them (local wheels on this project's machines),
# then numpy==$USER_NUMPY and $USER_OPENCV (a numpy-1.x user's build; requirements.txt pins
# neither version). Then
#   1. pip's dry run of `pip install -e REPO` (--report): everything pip would install;
#   2. the install itself (skipped with --dry-run) and `pip check`.
# It prints torch, torchvision, numpy, cv2 and the installed cv2 distributions before and after,
# and exits non-zero if pip fails, would install or did change any of them, or a second cv2
# distribution appears. `import vild_d2` is expected to fail there (no detectron2, no lvis):
# its outcome is printed, not checked.
#
# The machine's pip constraint file (if any) is switched off with PIP_CONSTRAINT=/dev/null, so
# that a cap there cannot hide a torch upgrade; indexes and find-links are kept.
#
# Usage: scripts/check_user_install.sh [--dry-run] [REPO]   (REPO: this repository by default)
# Knobs: PYTHON=python3, USER_NUMPY=1.26.4, USER_OPENCV=opencv-python-headless==4.11.0.86,
#        KEEP=1 keeps the temp dir. Takes a few minutes (torch install); run it with `nice`.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
dry_run=0
if [ "${1:-}" = "--dry-run" ]; then dry_run=1; shift; fi
repo=$(cd "${1:-$here}" && pwd)
PYTHON=${PYTHON:-python3}
USER_NUMPY=${USER_NUMPY:-1.26.4}
USER_OPENCV=${USER_OPENCV:-opencv-python-headless==4.11.0.86}
export PIP_CONSTRAINT=/dev/null PIP_DISABLE_PIP_VERSION_CHECK=1

tmp=$(mktemp -d)
if [ "${KEEP:-0}" = 1 ]; then echo "[check] keeping $tmp"; else trap 'rm -rf "$tmp"' EXIT; fi
log() { echo "[check] $*"; }
"$PYTHON" -m venv "$tmp/venv"
PY="$tmp/venv/bin/python"
# pip, without the warnings about find-links folders missing on this machine
pip() {
  "$PY" -m pip "$@" 2>&1 | { grep -v "is ignored: it is neither a file nor a directory" || true; }
  return "${PIPESTATUS[0]}"
}

log "user environment: torch/torchvision ($here/requirements-torch.txt), numpy==$USER_NUMPY, $USER_OPENCV"
pip install -q -r "$here/requirements-torch.txt"
pip install -q "numpy==$USER_NUMPY" "$USER_OPENCV"

# One line: the versions that must not change and every installed distribution that ships cv2.
versions() {
  "$PY" - <<'EOF'
import importlib.metadata as md
import torch, torchvision, numpy, cv2
cv2_dists = sorted({d.metadata["Name"] for d in md.distributions() if d.metadata["Name"].lower().startswith("opencv")})
print(f"torch={torch.__version__} torchvision={torchvision.__version__} numpy={numpy.__version__} "
      f"cv2={cv2.__version__} cv2-distributions={','.join(cv2_dists)}")
EOF
}
setuptools_version() { "$PY" -c 'import importlib.metadata as md; print(md.version("setuptools"))' 2>/dev/null || echo none; }
setuptools_before=$(setuptools_version)
before=$(versions)
log "before: $before"

log "dry run: pip install -e $repo"
pip install -q --dry-run --report "$tmp/report.json" -e "$repo"
would_touch=$("$PY" - "$tmp/report.json" <<'EOF'
import json, sys
installs = [(i["metadata"]["name"], i["metadata"]["version"]) for i in json.load(open(sys.argv[1]))["install"]]
print("[check] pip would install:", " ".join(f"{n}=={v}" for n, v in installs), file=sys.stderr)
guarded = [f"{n}=={v}" for n, v in installs
           if n.lower() in ("torch", "torchvision", "numpy") or n.lower().startswith("opencv")]
print(" ".join(guarded))
EOF
)
status=0
if [ -n "$would_touch" ]; then log "FAIL: the dry run would install $would_touch"; status=1; fi
if [ "$dry_run" = 1 ]; then exit "$status"; fi

log "install: pip install -e $repo"
pip install -q -e "$repo"
pip check || { log "FAIL: pip check found broken requirements"; status=1; }
after=$(versions) || { log "FAIL: torch, torchvision, numpy or cv2 no longer imports"; exit 1; }
log "after:  $after"
log "setuptools (capped below 81 by setup.py, for pkg_resources): $setuptools_before -> $(setuptools_version)"
if [ "$after" != "$before" ]; then log "FAIL: the user's packages changed"; status=1; fi
case "$after" in *cv2-distributions=*,*) log "FAIL: a second cv2 distribution appeared"; status=1 ;; esac
origin=$(cd "$tmp" && "$PY" -c 'import importlib.util as u; print(u.find_spec("vild_d2").origin)')
case "$origin" in
  "$repo"/*) log "vild_d2 resolves to $origin (editable)" ;;
  *) log "FAIL: vild_d2 resolves to $origin, not into $repo"; status=1 ;;
esac
if import_err=$(cd "$tmp" && "$PY" -c "import vild_d2" 2>&1); then
  log "import vild_d2: works"
else
  log "import vild_d2 (not required here): $(echo "$import_err" | tail -1)"
fi
if [ "$status" = 0 ]; then log "OK: torch, torchvision, numpy and OpenCV unchanged"; fi
exit "$status"
