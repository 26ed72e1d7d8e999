# One place for the commands the README names.
PY ?= .venv/bin/python
export HF_HUB_OFFLINE := 1
export PYTHONHASHSEED := 0

.PHONY: install triton-env test test-fast lint demo phantom-demo contact-sheet bench-phantom bench downstream vocabulary triton repository stack stack-smoke

install:
	python3 -m venv .venv
	.venv/bin/pip install --quiet --upgrade pip
	.venv/bin/pip install --quiet torch==2.13.0
	.venv/bin/pip install --quiet -e '.[dev]'

# The Triton test server: nvidia-pytriton's tritonserver (CPU) in its own venv (numpy<2).
triton-env: .venv-triton/.ready

.venv-triton/.ready:
	python3 -m venv .venv-triton
	.venv-triton/bin/pip install --quiet --upgrade pip
	.venv-triton/bin/pip install --quiet nvidia-pytriton==0.7.0 'onnxruntime>=1.18,<2'
	touch $@

# A local CPU Triton serving model_repository/ (the CPU model) on loopback ports 8000-8002.
triton: repository
	$(PY) -m export.triton_server --repository model_repository --env .venv-triton

repository:
	$(PY) -m fetalflex.cli export repository --with-onnx

# The local stack of real parts on loopback: Triton + orchestrator + Prometheus (with our rules).
stack: triton-env
	$(PY) -m service.stack

stack-smoke: triton-env
	$(PY) -m service.stack --smoke

lint:
	$(PY) -m ruff check .
	$(PY) -m mypy  # fetalflex/ service/ export/ bench/ ([tool.mypy] in pyproject.toml)

# Everything (what CI runs): ruff, mypy, the Triton test server's venv, every test.
test: lint triton-env
	$(PY) -m pytest -q

# The inner loop: every test not marked slow (tests/conftest.py SLOW_MODULES), no lint.
test-fast:
	$(PY) -m pytest -q -m "not slow"

demo:
	$(PY) -m fetalflex.cli gallery --out out/gallery --overwrite

phantom-demo:
	$(PY) -m fetalflex.cli phantom --n 28 --out out/phantom-demo --abnormal-fraction 0.25
	$(PY) -m fetalflex.cli contact-sheet --out out/contact_sheet.png

contact-sheet:
	$(PY) -m fetalflex.cli contact-sheet --out docs/contact_sheet.png

bench-phantom:
	$(PY) -m bench phantom --sizes 128 256 --n 400

# The evaluation phantoms the sampler benchmark reads (gitignored; same seed as docs/).
runs/eval128/manifest.jsonl:
	$(PY) -m fetalflex.cli phantom --n 1400 --size 128 --seed 99 --abnormal-fraction 0.3 --out runs/eval128

# Every CPU benchmark of docs/PERFORMANCE.md, one after the other (JSON + PNG in out/bench).
bench: triton-env runs/eval128/manifest.jsonl
	$(PY) -m bench denoiser --out out/bench
	$(PY) -m bench sampler --data runs/eval128/manifest.jsonl --out out/bench
	$(PY) -m bench grpc --out out/bench
	$(PY) -m bench e2e --out out/bench

# The downstream-utility experiment of docs/EVALUATION.md.
downstream:
	$(PY) -m fetalflex.cli evaluate-downstream --out out/downstream

vocabulary:
	$(PY) -m fetalflex.anatomy.vocabulary
