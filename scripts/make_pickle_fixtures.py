#!/usr/bin/env python3
"""Writes the small pickle fixtures under tests/fixtures/ (run by hand; needs numpy).

usage: python3 scripts/make_pickle_fixtures.py [SHARED_DIR]   (default ../shared)

- mnist_py2.pkl.gz: the tutorial's layout (Python 2 protocol 2, BINSTRING raw bytes), 16 images
  per split, made by SHARED_DIR/tools/make_mnist_pkl.py --limit 16 from the MNIST IDX files.
- mnist_py3_p{2,3,4,5}.pkl.gz: the same arrays loaded in Python 3 and pickled by numpy with
  protocols 2 to 5.
- bad_*.pkl.gz: malformed variants, each with one problem the reader must name.
"""
import datetime
import gzip
import pathlib
import pickle
import subprocess
import sys

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "fixtures"
SHARED = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else ROOT.parent / "shared").resolve()


def write_gz(name, raw):
    (OUT / name).write_bytes(gzip.compress(raw, compresslevel=9, mtime=0))


def dump(name, obj, protocol=2):
    write_gz(name, pickle.dumps(obj, protocol=protocol))


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    py2 = OUT / "mnist_py2.pkl.gz"
    subprocess.run(
        [sys.executable, str(SHARED / "tools" / "make_mnist_pkl.py"), str(SHARED / "data" / "mnist"), str(py2), "--limit", "16"],
        check=True,
    )
    with gzip.open(py2, "rb") as f:
        data = pickle.load(f, encoding="latin-1")
    for p in (2, 3, 4, 5):
        dump(f"mnist_py3_p{p}.pkl.gz", data, protocol=p)
    (xt, yt), valid, test = data
    dump("bad_big_endian.pkl.gz", ((xt.astype(">f4"), yt), valid, test))
    dump("bad_fortran.pkl.gz", ((np.asfortranarray(xt), yt), valid, test))
    dump("bad_global.pkl.gz", ((xt, yt), valid, test, datetime.date(2020, 1, 1)))
    bad_labels = yt.copy()
    bad_labels[3] = 12
    dump("bad_label.pkl.gz", ((xt, bad_labels), valid, test))
    dump("bad_scaling.pkl.gz", ((xt * (256.0 / 255.0), yt), valid, test))
    dump("bad_two_splits.pkl.gz", ((xt, yt), valid))
    # A shape that disagrees with the byte count: the tool's own writer, with a wrong shape.
    sys.path.insert(0, str(SHARED / "tools"))
    import make_mnist_pkl as m

    p = m.P()
    for _ in range(3):
        p.array((5, 784), b"f4", xt[:4].tobytes())
        p.array((5,), b"i8", yt[:5].tobytes())
        p.out += b"\x86"
        p.put()
    p.out += b"\x87"
    p.put()
    p.out += b"."
    write_gz("bad_shape.pkl.gz", bytes(p.out))
    raw = gzip.open(OUT / "mnist_py3_p4.pkl.gz").read()
    write_gz("bad_truncated.pkl.gz", raw[: len(raw) // 2])
    print("wrote", OUT)


if __name__ == "__main__":
    main()
