"""Inputs and outputs on object storage: a real S3-compatible server (moto) on 127.0.0.1.

The server runs in a subprocess, started once for the tests that use it (:class:`support.S3Server`; those
are marked slow); credentials are fake and come from the environment, the endpoint from ``storage_options``
in the config, as a user would write them. Every test uses its own prefix of the one bucket. The last two
tests need no server: options kept out of reprs, and fsspec URLs without ETags (``memory://``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import xarray as xr
import zarr

pytest.importorskip("s3fs")
pytest.importorskip("moto")

from pipeline.config import RunConfig  # noqa: E402
from pipeline.io import write_array  # noqa: E402
from pipeline.job import run  # noqa: E402
from pipeline.job.describe import describe_output  # noqa: E402
from pipeline.testing import reference_ncc, sample_pair, write_config  # noqa: E402
from support import REPO, S3Server, run_cli

BUCKET = "lncc-test"


@pytest.fixture(scope="module")
def s3():
    """The server, with its fake credentials in this process's environment (and so the CLI's)."""
    with S3Server(BUCKET) as server, pytest.MonkeyPatch.context() as env:
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
            env.delenv(name, raising=False)
        for name, value in server.credentials.items():
            env.setenv(name, value)
        yield server


@pytest.fixture
def options(s3) -> dict[str, str]:
    return {"endpoint_url": s3.endpoint_url}


@pytest.fixture
def fs(options):
    import s3fs

    return s3fs.S3FileSystem(**options, skip_instance_cache=True, use_listings_cache=False)  # lists of now


def cli_env() -> dict[str, str]:
    """This process's environment (with the fake credentials), importing lncc from this checkout."""
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path}


def config(**settings) -> RunConfig:
    return RunConfig.model_validate(settings)


def metadata_text(fs, prefix: str) -> str:
    """Every metadata/attrs object under an S3 prefix, concatenated."""
    names = (".zattrs", ".zgroup", ".zarray", ".zmetadata", "zarr.json")
    return "\n".join(fs.cat_file(p).decode() for p in fs.find(prefix) if p.endswith(names))


@pytest.mark.slow
def test_cli_reads_a_v2_v3_pair_from_s3_and_writes_the_map_to_s3(tmp_path, s3, options, fs):
    """A pair uploaded with zarr (formats 3 and 2) is read and the map written to S3 by `lncc run`; it equals
    the in-memory result, a rerun is up to date, `lncc inspect` finds the endpoint in the environment, and no
    storage option is in the output or the CLI's output."""
    ref, mov = sample_pair((300, 340), "uint8", seed=3)
    ref_url = write_array(f"s3://{BUCKET}/cli/in.zarr", ref, chunks=(128, 128), name="ref", storage_options=options)
    mov_url = write_array(f"s3://{BUCKET}/cli/mov.zarr", mov, chunks=(128, 128), zarr_format=2,
                          storage_options=options)
    out = f"s3://{BUCKET}/cli/out.zarr"
    cfg = write_config(tmp_path / "c.yaml", reference=ref_url, moving=mov_url, output=out, window=7,
                       chunks={"y": 128, "x": 128}, storage_options=options)

    first = run_cli("run", str(cfg), cwd=tmp_path, env=cli_env())
    assert first.returncode == 0, first.stderr
    assert "computed: 9 blocks" in first.stdout
    ds = xr.open_zarr(out, storage_options=options)
    assert ds.attrs["lncc"]["status"] == "complete"
    assert np.abs(ds["ncc"].values - reference_ncc(ref, mov, 7)).max() <= 1e-6
    assert ds.attrs["lncc"]["inputs"]["moving"]["zarr_format"] == 2

    again = run_cli("run", str(cfg), cwd=tmp_path, env=cli_env())
    assert again.returncode == 0, again.stderr
    assert "up to date" in again.stdout
    inspect = run_cli("inspect", out, cwd=tmp_path,
                      env={**cli_env(), "AWS_ENDPOINT_URL": s3.endpoint_url})  # as the README says
    assert inspect.returncode == 0, inspect.stderr
    assert inspect.stdout.startswith(f"{out}: complete (9 of 9 blocks)")

    port = s3.endpoint_url.rsplit(":", 1)[1]
    secrets = [s3.endpoint_url, f"127.0.0.1:{port}", "endpoint_url", "storage_options",
               S3Server.credentials["AWS_ACCESS_KEY_ID"], S3Server.credentials["AWS_SECRET_ACCESS_KEY"]]
    stored = metadata_text(fs, f"{BUCKET}/cli/out.zarr") + json.dumps(ds.attrs)
    printed = first.stdout + first.stderr + again.stdout + again.stderr + inspect.stdout + inspect.stderr
    for secret in secrets:
        assert secret not in stored
        assert secret not in printed


@pytest.mark.slow
def test_kill_minus_9_of_an_s3_run_then_rerun_resumes_bit_identical(tmp_path, s3, options, fs):
    """`lncc run` killed part way through an S3 output: the rerun computes only the blocks without a ledger
    entry, and ends with chunk objects identical to an uninterrupted run's."""
    from pipeline import local_ncc

    ref, mov = sample_pair((2048, 2048), "uint8", seed=5)
    # 16 blocks: requests, not pixels, are what the S3 server spends its time on
    ref_url = write_array(f"s3://{BUCKET}/kill/in.zarr", ref, chunks=(512, 512), name="ref", storage_options=options)
    mov_url = write_array(f"s3://{BUCKET}/kill/in.zarr", mov, chunks=(512, 512), name="mov", storage_options=options)
    settings = dict(reference=ref_url, moving=mov_url, window=9, chunks={"y": 512, "x": 512},
                    compute={"scheduler": "threads", "workers": 1}, storage_options=options)
    killed = f"{BUCKET}/kill/killed.zarr"
    cfg = write_config(tmp_path / "c.yaml", output=f"s3://{killed}", **settings)

    proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "run", str(cfg), "--quiet"], cwd=tmp_path,
                            env=cli_env())
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        try:  # one LIST request: ledger entries are objects of their own
            if len(fs.find(f"{killed}/_lncc/blocks/c")) >= 4:
                break
        except FileNotFoundError:
            pass
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed: make the pair larger"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()

    report = describe_output(f"s3://{killed}", storage_options=options)
    done_before = report["blocks_done"]
    assert report["state"] == "incomplete" and report["provenance"]["status"] == "running"
    assert 4 <= done_before < 16 and report["blocks_total"] == 16
    before = {o["name"]: o["LastModified"] for o in fs.find(f"{killed}/ncc/c", detail=True).values()}
    time.sleep(1.1)  # S3 times have a resolution of one second: any object written from now on is later

    rerun = run_cli("run", str(cfg), "--set", "compute.workers=2", cwd=tmp_path,
                    env=cli_env())  # compute is not in the hash
    assert rerun.returncode == 0, rerun.stderr
    assert f"resumed: {16 - done_before} of 16 blocks computed" in rerun.stdout
    # Counted independently of lncc's report: chunk objects written by the rerun.
    after = {o["name"]: o["LastModified"] for o in fs.find(f"{killed}/ncc/c", detail=True).values()}
    last_before = max(before.values())
    assert len(after) == 16
    assert sum(t > last_before for t in after.values()) == 16 - done_before

    clean = f"{BUCKET}/kill/clean.zarr"
    run(config(output=f"s3://{clean}", **{**settings, "compute": {"workers": 2}}))
    chunks = sorted(p[len(clean):] for p in fs.find(f"{clean}/ncc/c"))
    assert chunks == sorted(p[len(killed):] for p in after)
    resumed, uninterrupted = fs.cat([killed + key for key in chunks]), fs.cat([clean + key for key in chunks])
    assert all(resumed[killed + key] == uninterrupted[clean + key] for key in chunks)
    stored = xr.open_zarr(f"s3://{killed}", storage_options=options)
    np.testing.assert_array_equal(stored["ncc"].values, local_ncc(ref, mov, 9))
    assert describe_output(f"s3://{killed}", storage_options=options)["state"] == "complete"


@pytest.mark.slow
def test_changed_s3_input_is_recomputed_and_unchanged_is_up_to_date(s3, options):
    """The fingerprint of an S3 input (object listing with ETags) sees a rewritten chunk."""
    ref, mov = sample_pair((200, 220), "uint8", seed=4)
    ref_url = write_array(f"s3://{BUCKET}/fp/in.zarr", ref, chunks=(64, 64), name="ref", storage_options=options)
    mov_url = write_array(f"s3://{BUCKET}/fp/in.zarr", mov, chunks=(64, 64), name="mov", storage_options=options)
    out = f"s3://{BUCKET}/fp/out.zarr"
    cfg = config(reference=ref_url, moving=mov_url, output=out, window=5, chunks={"y": 128, "x": 128},
                 storage_options=options)
    assert run(cfg).pairs[0].action == "fresh"
    assert run(cfg).pairs[0].action == "up to date"

    stored = zarr.open_array(mov_url, mode="r+", storage_options=options)
    stored[:64, :64] = 255 - mov[:64, :64]  # same shape and dtype, new bytes
    mov[:64, :64] = 255 - mov[:64, :64]
    result = run(cfg).pairs[0]
    assert result.action == "fresh" and result.blocks_computed == 4
    ncc = xr.open_zarr(out, storage_options=options)["ncc"].values
    assert np.abs(ncc - reference_ncc(ref, mov, 5)).max() <= 1e-6


@pytest.mark.slow
def test_a_deleted_s3_chunk_or_ledger_entry_is_recomputed_and_foreign_objects_are_kept(s3, options, fs):
    """An S3 output with a chunk object or a ledger entry deleted: describe_output says damaged or incomplete,
    a rerun recomputes just that block to the exact map; an object lncc did not write, put inside the
    output, makes a recompute refuse (--force too) and stays."""
    from pipeline.errors import InputError

    ref, mov = sample_pair((256, 256), "uint8", seed=9)
    ref_url = write_array(f"s3://{BUCKET}/dmg/in.zarr", ref, chunks=(64, 64), name="ref", storage_options=options)
    mov_url = write_array(f"s3://{BUCKET}/dmg/in.zarr", mov, chunks=(64, 64), name="mov", storage_options=options)
    out = f"s3://{BUCKET}/dmg/out.zarr"
    cfg = config(reference=ref_url, moving=mov_url, output=out, window=5, chunks={"y": 64, "x": 64},
                 storage_options=options)
    run(cfg)
    expected = xr.open_zarr(out, storage_options=options)["ncc"].values
    fs.rm(f"{BUCKET}/dmg/out.zarr/ncc/c/1/2")
    assert describe_output(out, storage_options=options)["state"] == "damaged"
    result = run(cfg).pairs[0]
    assert (result.action, result.blocks_computed, result.damaged) == ("resume", 1, 1)
    fs.rm(f"{BUCKET}/dmg/out.zarr/_lncc/blocks/c/3/0/0")
    result = run(cfg).pairs[0]
    assert (result.action, result.blocks_computed) == ("resume", 1)
    np.testing.assert_array_equal(xr.open_zarr(out, storage_options=options)["ncc"].values, expected)
    assert describe_output(out, storage_options=options)["state"] == "complete"
    fs.pipe(f"{BUCKET}/dmg/out.zarr/notes.txt", b"mine")
    for force in (False, True):
        with pytest.raises(InputError, match="notes.txt"):
            run(config(reference=ref_url, moving=mov_url, output=out, window=7, storage_options=options),
                force=force)
    assert fs.cat(f"{BUCKET}/dmg/out.zarr/notes.txt") == b"mine"


@pytest.mark.slow
@pytest.mark.parametrize("where", ["local input, S3 output", "S3 input, local output"])
def test_local_and_s3_mixed(tmp_path, s3, options, where):
    """A local pair written to S3, and an S3 pair written to a local directory."""
    ref, mov = sample_pair((150, 170), "float32", seed=7)
    if where.startswith("local"):
        base, out = str(tmp_path / "in.zarr"), f"s3://{BUCKET}/mixed/out.zarr"
        urls = [write_array(base, image, chunks=(64, 64), name=n) for image, n in ((ref, "ref"), (mov, "mov"))]
    else:
        base, out = f"s3://{BUCKET}/mixed/in.zarr", str(tmp_path / "out.zarr")
        urls = [write_array(base, image, chunks=(64, 64), name=n, storage_options=options)
                for image, n in ((ref, "ref"), (mov, "mov"))]
    result = run(config(reference=urls[0], moving=urls[1], output=out, window=7, storage_options=options))
    assert result.pairs[0].action == "fresh"
    ncc = xr.open_zarr(out, **({"storage_options": options} if out.startswith("s3") else {}))["ncc"].values
    assert np.abs(ncc - reference_ncc(ref, mov, 7)).max() <= 1e-6


@pytest.mark.slow
def test_s3_errors_are_one_line_without_secrets(tmp_path, s3, options):
    """A missing S3 input and an unreachable endpoint: exit 2, one line naming the URL and the fix, and
    none of the storage options (keys, secret, endpoint) in it. An output in a missing bucket is refused."""
    ref, _ = sample_pair((64, 64), "uint8", seed=1)
    present = write_array(f"s3://{BUCKET}/err/in.zarr", ref, name="ref", storage_options=options)
    missing = f"s3://{BUCKET}/err/missing.zarr/ref"
    secret_options = {**options, "key": "AKIAFAKEKEYFORLNCC", "secret": "fake-secret-never-printed"}
    cfg = write_config(tmp_path / "c.yaml", reference=missing, moving=present, output=f"s3://{BUCKET}/err/o.zarr",
                       storage_options=secret_options)
    result = run_cli("run", str(cfg), cwd=tmp_path, env=cli_env())
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and missing in lines[0] and "does not exist" in lines[0]
    assert "Traceback" not in result.stderr

    # Nothing listens on this port: the store cannot be reached at all (botocore names the endpoint).
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}"
    unreachable = {**secret_options, "endpoint_url": closed, "config_kwargs": {"retries": {"max_attempts": 1}}}
    cfg = write_config(tmp_path / "d.yaml", reference=present, moving=present, output=f"s3://{BUCKET}/err/o.zarr",
                       storage_options=unreachable)
    down = run_cli("validate", str(cfg), cwd=tmp_path, env=cli_env())
    assert down.returncode == 2, down.stderr
    assert len(down.stderr.strip().splitlines()) == 1 and present in down.stderr and "cannot be read" in down.stderr
    from pipeline.errors import InputError
    from pipeline.job import plan_run

    with pytest.raises(InputError, match="'s3://no-such-bucket/o.zarr' cannot be written .*bucket does not exist"):
        plan_run(config(reference=present, moving=present, output="s3://no-such-bucket/o.zarr",
                        storage_options=options))
    for text in (result.stdout + result.stderr, down.stdout + down.stderr):
        for secret in ("AKIAFAKEKEYFORLNCC", "fake-secret-never-printed", s3.endpoint_url, closed,
                       closed.removeprefix("http://")):
            assert secret not in text


def test_storage_options_stay_out_of_reprs_and_go_with_pickled_writers():
    """Options are kept where they are needed (open_input, the workers' writer) and shown nowhere."""
    import pickle

    from pipeline.io import InputInfo, OutputWriter, redact

    secret = {"endpoint_url": "http://10.1.2.3:9000", "key": "AKIAEXAMPLE", "secret": "s3cr3t-value",
              "client_kwargs": {"region_name": "eu"}, "anon": False}
    info = InputInfo("s3://b/a.zarr/x", (4, 4), np.dtype("uint8"), ("y", "x"), (4, 4), 3, storage_options=secret)
    assert info == InputInfo("s3://b/a.zarr/x", (4, 4), np.dtype("uint8"), ("y", "x"), (4, 4), 3)
    writer = pickle.loads(pickle.dumps(OutputWriter("s3://b/o.zarr", ("ncc",), secret)))
    assert writer.storage_options == secret and writer._arrays == {} and writer._ledger is None
    for text in (repr(info), repr(writer)):
        assert "s3cr3t" not in text and "AKIA" not in text and "10.1.2.3" not in text
    message = redact("could not reach http://10.1.2.3:9000/b (host 10.1.2.3) with AKIAEXAMPLE/s3cr3t-value in eu",
                     secret)
    assert message == "could not reach ***/b (host ***) with ***/*** in eu"  # "eu": too short to be a secret


def test_any_fsspec_url_works_and_untagged_objects_are_hashed():
    """memory:// lists objects without ETags: the fingerprint reads and hashes them, and still sees a change."""
    from pipeline.io import fingerprint

    ref, mov = sample_pair((100, 120), "uint8", seed=3)
    ref_url = write_array("memory://lncc-test-any/in.zarr", ref, chunks=(64, 64), name="ref")
    mov_url = write_array("memory://lncc-test-any/in.zarr", mov, chunks=(64, 64), name="mov")
    cfg = config(reference=ref_url, moving=mov_url, output="memory://lncc-test-any/out.zarr", window=5)
    assert run(cfg).pairs[0].action == "fresh" and run(cfg).pairs[0].action == "up to date"
    before = fingerprint(mov_url)
    zarr.open_array(mov_url, mode="r+")[0, 0] = 255 - mov[0, 0]
    assert fingerprint(mov_url) != before
    assert run(cfg).pairs[0].action == "fresh"


@pytest.mark.slow
def test_a_tiff_ingested_to_s3_runs_from_there_and_resumes(s3, options, tmp_path):
    """lncc ingest writes a local TIFF to a zarr group on S3 (moto's server); a run reads it from there and equals
    the run from the TIFF; an interrupted ingest to S3 resumes with the blocks not done; a TIFF URL is refused."""
    import tifffile

    from pipeline.errors import InputError
    from pipeline.job import ingest

    a, b = sample_pair((256, 192), "uint8", seed=4)
    tifs = [tmp_path / "a.tif", tmp_path / "b.tif"]
    for path, image in zip(tifs, (a, b)):
        tifffile.imwrite(path, image, tile=(64, 64), compression="zlib")
    dest = f"s3://{BUCKET}/ingest/a.zarr"

    def interrupt(done, total):
        if done >= 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        ingest(str(tifs[0]), dest, chunks={"y": 32, "x": 64}, storage_options=options, progress=interrupt)
    summary = ingest(str(tifs[0]), dest, chunks={"y": 32, "x": 64}, storage_options=options)
    assert summary.action == "resume" and summary.written < summary.blocks
    outputs = []
    for name, reference in (("s3", dest), ("tiff", str(tifs[0]))):
        out = str(tmp_path / f"{name}.zarr")
        run(config(reference=reference, moving=str(tifs[1]), output=out, window=7, storage_options=options))
        outputs.append(xr.open_zarr(out)["ncc"].values)
    np.testing.assert_array_equal(*outputs)
    with pytest.raises(InputError, match="local files only"):
        run(config(reference=f"s3://{BUCKET}/scans/a.tif", moving=str(tifs[1]), output=str(tmp_path / "x.zarr"),
                   storage_options=options))


@pytest.mark.slow
def test_an_int16_multiscale_output_on_s3_is_an_ome_zarr_image(s3, options, fs):
    """``output: {encoding: int16, multiscale: true}`` to S3: the NGFF metadata validates through the S3 store,
    the levels (those the blocks make and those made at the end) are NaN-aware means of the decoded map, a
    lost level object is damage that a rerun repairs, and a rerun is then up to date."""
    from ome_zarr_models.v05.image import Image

    ref, mov = sample_pair((300, 600), "uint8", seed=5)
    ref_url = write_array(f"s3://{BUCKET}/ms/in.zarr", ref, chunks=(64, 64), name="ref", storage_options=options)
    mov_url = write_array(f"s3://{BUCKET}/ms/in.zarr", mov, chunks=(64, 64), name="mov", storage_options=options)
    out = f"s3://{BUCKET}/ms/out.zarr"
    cfg = config(reference=ref_url, moving=mov_url, window=5, chunks={"y": 64, "x": 64}, storage_options=options,
                 output={"path": out, "encoding": "int16", "multiscale": True})
    run(cfg)
    group = zarr.open_group(out, mode="r", storage_options=options)
    image = Image.from_zarr(group)
    assert [d.path for d in image.ome_attributes.multiscales[0].datasets] == ["ncc", "levels/ncc/1",
                                                                               "levels/ncc/2"]
    ncc = xr.open_zarr(out, storage_options=options)["ncc"].values.astype(np.float64)
    for k in (1, 2):
        f = 2 ** k
        padded = np.full((-(-300 // f) * f, -(-600 // f) * f), np.nan)
        padded[:300, :600] = ncc
        expected = padded.reshape(padded.shape[0] // f, f, padded.shape[1] // f, f).mean(axis=(1, 3))
        level = group[f"levels/ncc/{k}"][...].astype(np.float64) / 32767
        np.testing.assert_allclose(level, expected, atol=2.0 / 32767)
    fs.rm(f"{BUCKET}/ms/out.zarr/levels/ncc/1/c/1/1")
    assert describe_output(out, storage_options=options)["state"] == "damaged"
    result = run(cfg).pairs[0]
    assert (result.action, result.blocks_computed) == ("resume", 1)
    assert run(cfg).pairs[0].action == "up to date"
