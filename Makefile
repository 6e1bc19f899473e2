# One place for the commands that README, CI and hooks share.
#   make venv   .venv with build + dev dependencies and syft_mpc built in release mode
#   make demo   encrypted training over worker processes, a transformer's encrypted inference and fine-tuning,
#               then secure matmul between party processes
#   make test   cargo test --workspace, make lint, mypy --strict, pytest (tests/ and benches/ run once each), make wheel-check
#   make wheel  the manylinux2014 wheel and the sdist in dist/ (zig links against glibc 2.17; auditwheel checks the tag)
#   make wheel-check  the wheel installed into fresh virtualenvs with the oldest and newest torch, smoke-tested there
#   make lint   cargo fmt --check, clippy -D warnings
#   make bench  pytest-benchmark with timing on; JSON into bench-results/, then a markdown table
#   make fuzz   cargo-fuzz (nightly Rust) on every fuzz target for FUZZ_SECONDS each (default 60)
#   make compare  syft_mpc vs CrypTen 0.4.1 (own venv, .venv-crypten) on the same workloads; table, JSON, PNGs in bench-results/

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.deps-installed
# Extra pip arguments for torch (e.g. an index with a CPU-only build)
TORCH_PIP_ARGS ?=
PYTEST_ARGS ?=
BENCH_DIR ?= bench-results
# CrypTen gets its own virtualenv: its declared requirements cannot install (a deprecated
# `sklearn` package), so it goes in with --no-deps plus the few modules it really imports.
CRYPTEN_VENV ?= .venv-crypten
CRYPTEN_PY := $(CRYPTEN_VENV)/bin/python
CRYPTEN_STAMP := $(CRYPTEN_VENV)/.deps-installed

.PHONY: venv build demo test test-rust test-python typecheck lint fmt bench compare clean fuzz wheel wheel-check

$(PY):
	$(PYTHON) -m venv $(VENV)

# Build and dev dependencies; re-run when pyproject.toml changes.
$(STAMP): $(PY) pyproject.toml
	$(PIP) install --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PIP) install $(TORCH_PIP_ARGS) "torch>=2.4"
	$(PY) -c "import torchvision" 2>/dev/null || $(PIP) install $(TORCH_PIP_ARGS) "torchvision>=0.19" \
		"torch==$$($(PY) -c 'import torch; print(torch.__version__.split("+")[0])')"
	$(PIP) install "maturin>=1.7,<2.0" "numpy>=1.22" "pytest>=7" "hypothesis>=6" \
		"pytest-benchmark>=4" "scikit-learn>=1.2" "mypy>=1.8" "matplotlib>=3.5" "tqdm>=4.60" "opacus>=1.4" \
		"nbclient>=0.7" "nbformat>=5.7" "ipykernel>=6" "websockets>=15" "playwright>=1.40" \
		"ziglang>=0.13" "auditwheel>=6" "uv>=0.5" "transformers>=4.40" "blake3>=1.0"
	touch $(STAMP)

# The extension is rebuilt incrementally (cargo) every time, so tests never run a stale build.
# The first build installs syft_mpc in editable mode (a .pth pointing at python/); later
# builds only replace python/syft_mpc/_native*.so.
venv: $(STAMP)
	VIRTUAL_ENV=$(abspath $(VENV)) $(PY) -m maturin develop --release \
		$(if $(wildcard $(VENV)/.syft-installed),--skip-install,)
	touch $(VENV)/.syft-installed
	$(PY) -c "import syft_mpc, syft_mpc._native as n; print('syft_mpc', syft_mpc.__version__, 'built')"

build: venv

# The main job: encrypted training on real data with every worker in its own process, a small
# transformer's encrypted inference and fine-tuning on the same data, then the raw protocol
# layer (secure matmul between a dealer and two party processes).
demo: venv
	$(PY) -m syft_mpc launch --workers bob,alice,carol examples/encrypted_digits_demo.py
	$(PY) -m syft_mpc launch --workers bob,alice,carol examples/encrypted_transformer_digits.py
	$(PY) examples/mpc_matmul_demo.py

test: test-rust lint typecheck test-python wheel-check

test-rust:
	cargo test --workspace

# mypy --strict over python/syft_mpc (configuration in pyproject.toml).
typecheck: venv
	$(PY) -m mypy

test-python: venv
	$(PY) -m pytest --durations=20 $(PYTEST_ARGS)

# The wheel users install. zig (from PyPI) links the extension against glibc 2.17, so the tag is
# manylinux2014 and pip takes it on Ubuntu 20.04, Debian 11 and RHEL 8 as well as on new systems;
# auditwheel confirms the tag and that no system library was bundled. The sdist builds with only
# cargo and pip (`pip install dist/syft_mpc-*.tar.gz`).
WHEEL_DIR ?= dist
OLDEST_TORCH ?= 2.4.1
wheel: $(STAMP)
	rm -rf $(WHEEL_DIR)
	PATH="$(abspath $(VENV))/bin:$$PATH" $(PY) -m maturin build --release --zig --compatibility manylinux2014 -o $(WHEEL_DIR)
	PATH="$(abspath $(VENV))/bin:$$PATH" $(PY) -m maturin sdist -o $(WHEEL_DIR)
	$(PY) -m auditwheel show $(WHEEL_DIR)/*.whl | tee $(WHEEL_DIR)/auditwheel.txt
	grep -q '"manylinux_2_17_x86_64"' $(WHEEL_DIR)/auditwheel.txt
	$(PY) -c 'import sys, zipfile; bad = [n for n in zipfile.ZipFile(sys.argv[1]).namelist() if ".libs/" in n or ".so." in n]; sys.exit(f"bundled libraries: {bad}" if bad else 0)' $(WHEEL_DIR)/*.whl

# The wheel as users install it: a fresh virtualenv per torch version (the oldest the package
# claims and the newest, the one in .venv), outside the source tree, then tests/wheel_smoke.py.
# uv installs from its cache, so torch is downloaded once per machine.
wheel-check: wheel
	@set -e; newest=$$($(PY) -c 'import torch; print(torch.__version__.split("+")[0])'); \
	for t in $(OLDEST_TORCH) $$newest; do \
		env=$$(mktemp -d)/venv; \
		$(VENV)/bin/uv venv -q --python $(PY) $$env; \
		$(VENV)/bin/uv pip install -q --python $$env/bin/python $(WHEEL_DIR)/*.whl "torch==$$t"; \
		(cd $$(dirname $$env) && env -u PYTHONPATH $$env/bin/python $(CURDIR)/tests/wheel_smoke.py $(CURDIR)); \
		rm -rf $$(dirname $$env); \
	done

lint:
	@cargo clippy --version >/dev/null 2>&1 && cargo fmt --version >/dev/null 2>&1 || rustup component add clippy rustfmt
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings

fmt:
	cargo fmt --all

bench: venv
	mkdir -p $(BENCH_DIR)
	$(PY) -m pytest benches --benchmark-enable --benchmark-only --benchmark-columns=min,median,max,rounds \
		--benchmark-json=$(BENCH_DIR)/bench-$$(date +%Y%m%d-%H%M%S).json $(PYTEST_ARGS)
	$(PY) benches/report.py $(BENCH_DIR)

# Coverage-guided fuzzing of the transport's decoders (needs `cargo +nightly` and
# `cargo install cargo-fuzz`). Seeds come from fuzz/corpus/ (committed); what a run discovers
# goes to fuzz/work/, crashes to fuzz/artifacts/ (both ignored). A crash fails the target:
# fix it, then add the input to fuzz/corpus/<target>/ so the stable replay test
# (rust/transport/tests/fuzz_replay.rs, part of `cargo test`) keeps checking it.
FUZZ_SECONDS ?= 60
FUZZ_TARGETS := frame_decoder handshake tcp_channel

fuzz:
	@for t in $(FUZZ_TARGETS); do \
		mkdir -p fuzz/work/$$t; \
		cargo +nightly fuzz run $$t fuzz/work/$$t fuzz/corpus/$$t -- -max_total_time=$(FUZZ_SECONDS) \
			-malloc_limit_mb=64 -rss_limit_mb=1024 -print_final_stats=1 || exit 1; \
	done

# torch pinned to the version in .venv (same wheel; pip reuses its cache), else torch>=2.4;
# torchvision (for that torch), transformers and onnxscript for the real-model rows.
$(CRYPTEN_STAMP):
	$(PYTHON) -m venv $(CRYPTEN_VENV)
	$(CRYPTEN_PY) -m pip install --upgrade pip
	$(CRYPTEN_PY) -m pip install $(TORCH_PIP_ARGS) \
		"torch$$($(PY) -c 'import torch; print("==" + torch.__version__.split("+")[0])' 2>/dev/null || echo '>=2.4')"
	$(CRYPTEN_PY) -m pip install --no-deps "crypten==0.4.1"
	$(CRYPTEN_PY) -m pip install numpy pyyaml omegaconf onnx onnxscript
	$(CRYPTEN_PY) -m pip install $(TORCH_PIP_ARGS) "torchvision" "transformers>=4.40" \
		"torch$$($(PY) -c 'import torch; print("==" + torch.__version__.split("+")[0])' 2>/dev/null || echo '>=2.4')"
	touch $(CRYPTEN_STAMP)

# The CrypTen side is best effort: if its venv cannot be made, the syft_mpc side still runs.
compare: venv
	$(PY) -c "import matplotlib" 2>/dev/null || $(PIP) install "matplotlib>=3.5"
	$(MAKE) --no-print-directory $(CRYPTEN_STAMP) || echo "warning: could not set up $(CRYPTEN_VENV); comparing without CrypTen"
	$(PY) benches/compare/compare.py --crypten-python $(CRYPTEN_PY) --out $(BENCH_DIR)

clean:
	rm -rf $(BENCH_DIR) .pytest_cache .hypothesis .benchmarks
	find python -name '*.so' -delete
