#!/usr/bin/env python3
"""Writes the seed corpora under fuzz/corpus/<target>/ (run by hand; standard library only).

usage: python3 scripts/make_fuzz_seeds.py

Seeds are small on purpose (the whole corpus stays well under 2 MB): tiny hand-made files of
each format, a few of the test fixtures, and the pickle fixtures decompressed. The targets are
described in src/fuzzing.rs.
"""
import gzip
import pathlib
import struct

ROOT = pathlib.Path(__file__).resolve().parent.parent
FIX = ROOT / "tests" / "fixtures"
OUT = ROOT / "fuzz" / "corpus"


def put(target, name, data):
    d = OUT / target
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data)


def idx(dims, data):
    return bytes([0, 0, 8, len(dims)]) + b"".join(struct.pack(">I", d) for d in dims) + bytes(data)


def gz(data):
    return gzip.compress(data, compresslevel=9, mtime=0)


def main():
    labels = gzip.decompress((ROOT / "data/mnist/t10k-labels-idx1-ubyte.gz").read_bytes())
    images = gzip.decompress((ROOT / "data/mnist/t10k-images-idx3-ubyte.gz").read_bytes())
    lab = idx([10], labels[8:18])
    img = idx([2, 28, 28], images[16 : 16 + 2 * 784])
    # idx: decompressed IDX files, valid and each kind of broken.
    put("idx", "labels10", lab)
    put("idx", "images2", img)
    put("idx", "empty_dims", idx([0, 28, 28], b""))
    put("idx", "bad_type", bytes([0, 0, 0x0D, 1, 0, 0, 0, 1, 0]))
    put("idx", "truncated", img[:100])
    put("idx", "huge_dims", idx([0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF], b"\x01"))
    # gzip: the same, compressed; two members; a real (small) MNIST file.
    put("gzip", "labels10.gz", gz(lab))
    put("gzip", "images2.gz", gz(img))
    put("gzip", "two_members.gz", gz(lab[:10]) + gz(lab[10:]))
    put("gzip", "t10k-labels.gz", (ROOT / "data/mnist/t10k-labels-idx1-ubyte.gz").read_bytes())
    put("gzip", "plain", lab)
    # pickle: the fixtures, decompressed (protocol 2 from Python 2 and 3, protocol 4), broken
    # ones, and small hand-made pickles.
    for name in ["mnist_py2", "mnist_py3_p4", "bad_shape", "bad_global"]:
        put("pickle", name + ".pkl", gzip.decompress((FIX / f"{name}.pkl.gz").read_bytes()))
    put("pickle", "small_values.pkl",
        b"\x80\x02(K\x01J\xfe\xff\xff\xffM,\x01J\x70\x11\x01\x00\x8a\x01\xff\x88NX\x02\x00\x00\x00ab]q\x00(K\x01K\x02e}(K\x01K\x02utq\x01.")
    put("pickle", "nested.pkl", b"\x80\x02" + b"(" * 64 + b"t" * 64 + b".")
    put("pickle", "global.pkl", b"\x80\x02cos\nsystem\nq\x00X\x02\x00\x00\x00lsq\x01\x85q\x02Rq\x03.")
    # safetensors: a trained CNN (ours) and PyTorch's, and a tiny logistic model header.
    for name in ["mnist_cnn_seed0", "torch_cnn"]:
        put("safetensors", name + ".safetensors", (FIX / f"{name}.safetensors").read_bytes())
    header = (b'{"__metadata__":{"architecture":"logistic","epoch":"1","batch":"0"},'
              b'"lin.bias":{"dtype":"F32","shape":[10],"data_offsets":[0,40]}}')
    put("safetensors", "partial.safetensors", struct.pack("<Q", len(header)) + header + bytes(40))
    # image: small PNGs from the fixtures, and hand-made PGM/PBM/BMP headers.
    for name in ["blank.png", "broken.png", "font_1.png", "font_7.png"]:
        p = FIX / "digits" / name
        if p.exists():
            put("image", name, p.read_bytes())
    put("image", "tiny.pgm", b"P5 4 4 255\n" + bytes([255, 255, 255, 255, 255, 0, 0, 255, 255, 0, 0, 255, 255, 255, 255, 255]))
    put("image", "tiny.pbm", b"P1\n3 3\n0 1 0\n1 1 1\n0 1 0\n")
    put("image", "huge_header.pgm", b"P5 65535 65535 255\n\x00")
    # metrics_log: what train --log writes, in both formats, and variants.
    ep = ('{"type":"epoch","epoch":%d,"train_loss":0.%d00000,"valid_loss":0.250000,'
          '"valid_accuracy":0.900000,"lr":0.1,"seconds":1.5000,"samples_per_sec":1000.0}\n')
    put("metrics_log", "run.jsonl", ('{"type":"header","settings":{"seed":"3"}}\n' + ep % (1, 5) + ep % (2, 4)).encode())
    put("metrics_log", "spaces.jsonl", b'{"type": "epoch", "epoch": 1, "train_loss": 0.5, "valid_loss": 0.25, "valid_accuracy": 0.9}\n')
    put("metrics_log", "inf.jsonl", b'{"type":"epoch","epoch":1,"train_loss":inf,"valid_loss":NaN,"valid_accuracy":0.9}\n')
    put("metrics_log", "run.csv",
        b"# settings: seed=3\nepoch,train_loss,valid_loss,valid_accuracy,lr,seconds,samples_per_sec\n"
        b"1,0.500000,0.250000,0.900000,0.1,1.5000,1000.0\n2,0.400000,0.200000,0.920000,0.1,1.5000,1000.0\n")
    put("metrics_log", "big_epoch.csv", b"epoch,train_loss,valid_loss,valid_accuracy\n1e300,1,1,1\n")
    # http_response: raw responses to a GET of f.gz whose content is "the file".
    body = b"the file"
    put("http_response", "ok", b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\nConnection: close\r\n\r\n" + body)
    put("http_response", "no_length", b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + body)
    put("http_response", "chunked",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nthe \r\n4\r\nfile\r\n0\r\n\r\n")
    put("http_response", "gzip_encoding",
        b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % len(gz(body)) + gz(body))
    put("http_response", "partial", b"HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 0-7/8\r\nContent-Length: 8\r\n\r\n" + body)
    put("http_response", "redirect", b"HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:1/x\r\nContent-Length: 0\r\n\r\n")
    put("http_response", "long_length", b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999\r\n\r\n" + body)
    put("http_response", "not_http", b"SSH-2.0-OpenSSH\r\n")
    print("wrote", OUT)


if __name__ == "__main__":
    main()
