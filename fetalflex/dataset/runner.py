"""The run: plan, skip what is complete, make the rest (in-process or by a service),
write each item atomically, and assemble the data set once every item is present.

Rerunning the same command after a crash, a kill or Ctrl-C makes only what is missing;
a complete directory is left as it is. With ``--shard i/N`` a run makes every N-th item;
shards may share one directory (the last to finish assembles the data set) or write their
own and be merged (``fetalflex dataset merge``).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fetalflex.dataset.assemble import (
    MANIFEST,
    PAIRS,
    SUMMARY,
    RunTimes,
    claim,
    finalize,
    missing,
)
from fetalflex.dataset.makers import Made, Maker
from fetalflex.dataset.plan import Item, plan, shard
from fetalflex.dataset.spec import DatasetSpec
from fetalflex.dataset.writer import model_of, read_record, write_item


@dataclass
class RunReport:
    planned: int  # items of the whole data set
    mine: int  # items of this shard
    made: int  # items made by this run
    seconds: float  # making them
    missing: int  # items of the data set still without a record
    summary: dict[str, Any] | None  # when this run completed the data set

    @property
    def items_per_s(self) -> float | None:
        return self.made / self.seconds if self.made and self.seconds > 0 else None


def _made(maker: Maker, items: list[Item]) -> Iterator[tuple[Item, Made]]:
    """(item, pixels) as they complete: in order in-process, ``maker.concurrency`` requests
    in flight against a service. Pending work is cancelled when the consumer stops."""
    if maker.concurrency <= 1:
        for it in items:
            yield it, maker.make(it)
        return
    pool = ThreadPoolExecutor(maker.concurrency, thread_name_prefix="dataset")
    todo = iter(items)
    running: dict[Future[Made], Item] = {}
    try:
        for it in todo:
            running[pool.submit(maker.make, it)] = it
            if len(running) >= 2 * maker.concurrency:
                break
        while running:
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for f in done:
                it = running.pop(f)
                yield it, f.result()
                nxt = next(todo, None)
                if nxt is not None:
                    running[pool.submit(maker.make, nxt)] = nxt
    finally:
        # Not waiting: on Ctrl-C or an error the caller closes the maker's channels, which
        # ends the requests in flight (their items are made again by the next run).
        pool.shutdown(wait=False, cancel_futures=True)


def _check_model(out: Path, done: list[Item], made: Made) -> None:
    """Items already present must come from the model that makes the rest."""
    for it in done:
        rec = read_record(out, it)
        if rec is not None and model_of(rec).sha256 != made.model.sha256:
            raise ValueError(f"{it.id}: made by model {model_of(rec).sha256[:12]}, but this "
                             f"run's model is {made.model.sha256[:12]}; a data set holds one "
                             f"model's images (write to a new --out)")


def run(spec: DatasetSpec, out: Path, new_maker: Callable[[], Maker],
        shard_of: tuple[int, int] = (0, 1), progress: bool = True) -> RunReport:
    """Make the missing items of ``shard_of`` (index, count) into ``out`` and assemble the
    data set when nothing is missing. ``new_maker`` is called only if there is work."""
    items = plan(spec)
    claim(out, spec)
    mine = shard(items, *shard_of)
    todo = missing(out, mine)
    done = [it for it in mine if it not in set(todo)]
    made, seconds = 0, 0.0
    if todo:
        maker = new_maker()
        from tqdm import tqdm

        bar = tqdm(total=len(todo), unit="item", file=sys.stderr, dynamic_ncols=True,
                   desc=f"dataset {spec.name}" + (f" shard {shard_of[0]}/{shard_of[1]}"
                                                  if shard_of[1] > 1 else ""),
                   disable=not progress or not sys.stderr.isatty())
        t0 = time.perf_counter()
        try:
            for it, px in _made(maker, todo):
                if made == 0:
                    _check_model(out, done, px)
                write_item(out, spec, it, px)
                made += 1
                bar.update(1)
        finally:
            seconds = time.perf_counter() - t0
            bar.close()
            maker.close()
    left = missing(out, items)
    summary = None
    if not left:
        final = [out / n for n in (MANIFEST, PAIRS, SUMMARY)]
        if made == 0 and all(p.is_file() for p in final):  # complete already: left as it is
            summary = json.loads((out / SUMMARY).read_text())
        else:
            summary = finalize(out, spec, RunTimes(made, seconds))
    return RunReport(len(items), len(mine), made, seconds, len(left), summary)
