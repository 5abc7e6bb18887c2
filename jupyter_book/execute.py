"""Execute the book's notebooks that the jupyter-cache does not hold yet, several at a time.

`jupyter-book build` would execute them too, but one after another. jupyter-cache's own parallel
executor races on this machine (two kernels bind the same TCP port; two processes truncate the
cache database at once), so here each worker runs one notebook with nbclient over IPC sockets in a
private folder, and only the parent process writes to the cache. The build then finds every
result by the hash of the notebook's code (how myst-nb looks notebooks up in cache mode).

usage: python execute.py CACHE_DIR JOBS NOTEBOOK...
A notebook that fails is reported and left out of the cache; the build executes it again and turns
the error into a warning, which fails the build.
"""
from __future__ import annotations

import sys
import tempfile
import time
import traceback
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import nbformat

TIMEOUT = 1800  # seconds per cell, as execute.timeout in _config.yml


def _run(path: str) -> tuple[str, str | None, float, str | None]:
    from jupyter_client.manager import KernelManager
    from nbclient import NotebookClient
    from nbclient.exceptions import DeadKernelError

    nb = nbformat.read(path, as_version=4)
    t0 = time.time()
    for attempt in (1, 2):  # a kernel that dies while starting is retried once; a failing cell is not
        with tempfile.TemporaryDirectory(prefix="book-kernel-") as sockets:
            km = KernelManager(kernel_name=nb.metadata.get("kernelspec", {}).get("name", "python3"),
                               transport="ipc", ip=str(Path(sockets) / "k"))
            client = NotebookClient(nb, km=km, timeout=TIMEOUT, allow_errors=False, record_timing=False,
                                    resources={"metadata": {"path": str(Path(path).parent)}})
            try:
                client.execute()
                # the cache key hashes the code cells and their metadata: keep what the build will
                # read (record_timing=False above adds no timestamps), so this key is the build's key
                return path, nbformat.writes(nb), time.time() - t0, None
            except (DeadKernelError, RuntimeError) as err:
                if attempt == 2 or "kernel" not in str(err).lower():
                    return path, None, time.time() - t0, traceback.format_exc(limit=3)
                nb = nbformat.read(path, as_version=4)
            except Exception:  # noqa: BLE001 - reported with its traceback, the build shows it again
                return path, None, time.time() - t0, traceback.format_exc()[-3000:]
    raise AssertionError("unreachable")


def main() -> int:
    from jupyter_cache import get_cache
    from jupyter_cache.base import CacheBundleIn

    cache_dir, jobs, paths = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    cache = get_cache(cache_dir)
    todo = []
    for p in paths:
        try:
            cache.match_cache_notebook(nbformat.read(p, as_version=4))
        except KeyError:
            todo.append(p)
    print(f"book: {len(paths) - len(todo)} of {len(paths)} notebooks already executed at this profile "
          f"and package version; executing {len(todo)}, {jobs} at a time", flush=True)
    failed = []
    t0 = time.time()
    with ProcessPoolExecutor(max_workers=max(1, jobs)) as pool:
        for fut in as_completed([pool.submit(_run, p) for p in todo]):
            path, text, seconds, err = fut.result()
            name = Path(path).name
            if err is not None:
                failed.append(name)
                print(f"book: {name} FAILED after {seconds:.0f} s\n{err}", flush=True)
                continue
            executed = nbformat.reads(text, as_version=4)
            if cache.create_hashed_notebook(executed)[1] != cache.create_hashed_notebook(
                    nbformat.read(path, as_version=4))[1]:
                print(f"book: {name}: execution changed the cache key; the build will execute it again")
            cache.cache_notebook_bundle(
                CacheBundleIn(executed, path, data={"execution_seconds": seconds}),
                check_validity=False, overwrite=True)
            print(f"book: executed {name} in {seconds:.0f} s", flush=True)
    if todo:
        print(f"book: execution took {time.time() - t0:.0f} s"
              + (f"; failed: {', '.join(failed)}" if failed else ""), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
