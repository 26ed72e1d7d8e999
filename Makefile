# One place for the commands the README names.
PY ?= .venv/bin/python
export HF_HUB_OFFLINE := 1
export PYTHONHASHSEED := 0

.PHONY: install test lint demo phantom-demo contact-sheet bench-phantom vocabulary

install:
	python3 -m venv .venv
	.venv/bin/pip install --quiet --upgrade pip
	.venv/bin/pip install --quiet torch==2.13.0
	.venv/bin/pip install --quiet -e '.[dev]'

lint:
	$(PY) -m ruff check .

test: lint
	$(PY) -m pytest -q

demo:
	$(PY) -m fetalflex.cli gallery --out out/gallery

phantom-demo:
	$(PY) -m fetalflex.cli phantom --n 28 --out out/phantom-demo --abnormal-fraction 0.25
	$(PY) -m fetalflex.cli contact-sheet --out out/contact_sheet.png

contact-sheet:
	$(PY) -m fetalflex.cli contact-sheet --out docs/contact_sheet.png

bench-phantom:
	$(PY) -m fetalflex.cli bench-phantom --sizes 128 256 --n 400

vocabulary:
	$(PY) -m fetalflex.anatomy.vocabulary
