#!/usr/bin/env bash
# Create the virtual environment and install recurrent-ppo with its dev extras.
#   - A machine whose python3 already holds a CUDA build of torch (a GPU image with no registry access):
#     the venv sees that interpreter's packages through a .pth file, and nothing is downloaded for them.
#   - A machine with an NVIDIA driver but no torch: pip's default torch, a CUDA build.
#   - Any other machine: torch==2.13.0, the CPU wheel (it lies on disk on our CPU machines).
set -euo pipefail
venv=${1:-.venv}
python=${PYTHON:-python3}

host_has_cuda_torch() {
    "$python" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" >/dev/null 2>&1
}

rm -rf "$venv"
host_cuda=false
host_has_cuda_torch && host_cuda=true
if ! "$python" -m venv "$venv"; then
    # An image whose python lacks ensurepip: the venv can run the host's pip through the .pth file below.
    $host_cuda || { echo "setup: '$python -m venv' failed (is the python3-venv package installed?)" >&2; exit 1; }
    echo "setup: venv without pip; pip comes from the host interpreter"
    rm -rf "$venv"
    "$python" -m venv --without-pip "$venv"
fi
# --no-compile: pip compiles its files' bytecode one at a time; compileall below uses every core.
pip=("$venv/bin/python" -m pip install --disable-pip-version-check --no-compile)
if $host_cuda; then
    echo "setup: using the host interpreter's CUDA torch"
    host_site=$("$python" -c "import site; print('\n'.join(site.getsitepackages()))")
    venv_site=$("$venv/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
    echo "$host_site" > "$venv_site/_host_site_packages.pth"
    # Offline-safe: build with the host's setuptools, take dependencies as they are installed there.
    "${pip[@]}" --no-build-isolation --no-deps -e ".[dev]"
    "$venv/bin/python" -m pip check >/dev/null 2>&1 || echo "setup: note: pip check reports missing packages (the host image may lack optional ones)"
elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    echo "setup: NVIDIA GPU found: installing the default (CUDA) torch build"
    "${pip[@]}" -e ".[dev]"
else
    echo "setup: no GPU: installing the CPU torch wheel torch==2.13.0"
    "${pip[@]}" "torch==2.13.0" -e ".[dev]"  # one resolve for both
fi
# The bytecode pip left out, on every core; a file that does not compile (some packages ship files for other
# Pythons) fails compileall as pip would have skipped it, so its status is ignored.
site_packages=$("$venv/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
"$venv/bin/python" -m compileall -q -j 0 "$site_packages" >/dev/null || true
"$venv/bin/python" -c "import torch, triton, recurrent_ppo; print(f'setup: torch {torch.__version__}, triton {triton.__version__}, cuda={torch.cuda.is_available()}')"
