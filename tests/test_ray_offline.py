"""The Ray backend without a cluster or a server: the light client stays Ray-free, --ray without Ray names the
extra, option mistakes, job tables (JSONL / CSV / Parquet, local or URI) read into the same jobs, and the Parquet
manifest that decides what a re-run skips. The batches themselves: tests/test_ray_server.py."""
import json
import os
import subprocess
import sys

import pytest

from comfyui_dreamo.dreamo_cli.api_workflow import Job  # conftest registers the repo as comfyui_dreamo
from comfyui_dreamo.dreamo_cli.client import main
from comfyui_dreamo.dreamo_cli.jobs import UsageError

from dreamo_testkit import REPO, kit_workflow

TINY = kit_workflow("dreamo_client_tiny_api.json")


def cli(code: str):
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)


def pyarrow_or_skip():
    from dreamo_testkit import ray_fixtures

    try:
        import pyarrow  # noqa: F401
    except ImportError:
        if os.environ.get("CI") == "true" or os.environ.get("DREAMO_REQUIRE_HOST") == "1":
            raise
        pytest.skip(ray_fixtures.MISSING)


def test_the_light_client_imports_neither_ray_nor_pyarrow():
    r = cli("import sys; from dreamo_cli.client import main, build_parser; build_parser().parse_args(['--ray', 'auto']);"
            " main(['--list-workflows']);"
            " print(sorted(m for m in sys.modules if m.split('.')[0] in ('ray', 'pyarrow')))")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "[]"


def test_ray_without_ray_installed_names_the_extra(tmp_path):
    """Ray made unimportable (as on a machine with only the light client): one line naming the pip extra."""
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text('{"id": "a"}\n')
    r = cli("import sys; sys.modules['ray'] = None\n"
            "from dreamo_cli.client import main\n"
            f"sys.exit(main(['--jobs', {str(jobs)!r}, '--ray', 'auto']))")
    assert r.returncode == 2
    assert r.stderr.strip() == ('dreamo-client: --ray needs Ray and pyarrow, and ray is not installed: pip install '
                                '"comfyui-dreamo[ray]" (in the pack\'s folder: pip install -e ".[ray]"), or pip '
                                'install ray pyarrow, into the Python that runs dreamo-client.')


def test_ray_options_without_ray_are_refused(capsys):
    assert main(["--workers", "2", "--cpu-workers", "--jobs", "x.jsonl"]) == 2
    assert "--workers, --cpu-workers belong(s) to a batch on Ray: add --ray auto" in capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    ([], "--ray runs a batch: give it --jobs"),
    (["--jobs", "j.jsonl", "--server", "h:1"], "--server is for the light client's own servers"),
    (["--jobs", "j.jsonl", "--attach", "h:1", "--workers", "2"], "--attach uses running servers"),
    (["--jobs", "j.jsonl", "--attach", "node1=ftp://x"], "--attach 'node1=ftp://x': not a server address"),
    (["--jobs", "j.jsonl", "--comfy-env", "NOVALUE"], "--comfy-env 'NOVALUE': expected KEY=VALUE"),
    (["--jobs", "j.jsonl", "--restarts", "-1"], "--retries and --restarts at least 0"),
])
def test_ray_option_mistakes_exit_2_before_ray_starts(args, message, capsys):
    pyarrow_or_skip()
    pytest.importorskip("ray", reason="Ray is not installed")
    assert main(["--ray", "local", *args]) == 2
    assert message in capsys.readouterr().err


# -- job tables --------------------------------------------------------------------------------------------
ROWS = [{"id": "a", "ref_1": "refs/one.png", "seed": 1, "prompt": "the bottle [ref#1]"},
        {"id": "b", "ref_1": "refs/two.png", "ref_2": "s3://bucket/garments/dress.png", "size": "96x64",
         "resolution_1": 128}]


def write_tables(folder):
    import pyarrow as pa
    import pyarrow.parquet as pq

    (folder / "jobs.jsonl").write_text("# a comment\n" + "\n".join(json.dumps(r) for r in ROWS) + "\n")
    columns = ["id", "ref_1", "ref_2", "seed", "prompt", "size", "resolution_1"]
    lines = [",".join(columns)] + [",".join(str(r.get(c, "")) for c in columns) for r in ROWS]
    (folder / "jobs.csv").write_text("\n".join(lines) + "\n")
    pq.write_table(pa.table({c: [r.get(c) for r in ROWS] for c in columns}), folder / "jobs.parquet")  # nulls


def test_jsonl_csv_and_parquet_tables_give_the_same_jobs_from_a_path_or_a_uri(tmp_path):
    pyarrow_or_skip()
    from comfyui_dreamo.dreamo_cli.ray_plan import read_table

    write_tables(tmp_path)
    defaults = Job(workflow=TINY, steps=3)
    read = {name: read_table(str(tmp_path / name), defaults) for name in ("jobs.jsonl", "jobs.csv", "jobs.parquet")}
    read["file URI"] = read_table(f"file://{tmp_path}/jobs.parquet", defaults)
    for name, jobs in read.items():
        assert [j.name for j in jobs] == ["a", "b"], name
        a, b = jobs
        # relative to the table's folder; from a file:// table a file:// URI, which each worker reads on its node
        folder = f"file://{tmp_path}/refs" if name == "file URI" else str(tmp_path / "refs")
        assert a.refs == {1: f"{folder}/one.png"}, name
        assert b.refs == {1: f"{folder}/two.png", 2: "s3://bucket/garments/dress.png"}, name
        assert (a.seed, a.steps, a.prompt, a.width) == (1, 3, "the bottle [ref#1]", None), name
        assert (b.seed, b.width, b.height, b.resolutions) == (None, 96, 64, {1: 128}), name


def test_a_table_on_an_object_store_takes_its_references_from_beside_it():
    from comfyui_dreamo.dreamo_cli.job_table import join, parent, place_reference

    folder = parent("s3://shop/batches/2025/jobs.parquet")
    assert folder == "s3://shop/batches/2025"
    assert place_reference(folder, "garments/red.png") == "s3://shop/batches/2025/garments/red.png"
    assert place_reference(folder, "../faces/anna.jpg") == "s3://shop/batches/faces/anna.jpg"
    assert place_reference(folder, "gs://other/x.png") == "gs://other/x.png"
    assert place_reference(folder, "/mnt/shared/x.png") == "/mnt/shared/x.png"
    assert join("s3://shop/out/", "a_01.png") == "s3://shop/out/a_01.png"


def test_table_mistakes_name_the_file_and_row(tmp_path):
    pyarrow_or_skip()
    import pyarrow as pa
    import pyarrow.parquet as pq

    from comfyui_dreamo.dreamo_cli.ray_plan import read_table

    pq.write_table(pa.table({"id": ["a", "b"], "colour": [None, "red"]}), tmp_path / "bad.parquet")
    with pytest.raises(UsageError, match=r"bad.parquet line 2: unknown column\(s\) colour"):
        read_table(str(tmp_path / "bad.parquet"), Job())
    (tmp_path / "fake.parquet").write_text("id,seed\n")
    with pytest.raises(ValueError, match=r"cannot read the jobs table .*fake.parquet"):
        read_table(str(tmp_path / "fake.parquet"), Job())
    with pytest.raises(ValueError, match=r"cannot read the jobs table .*absent.jsonl"):
        read_table(str(tmp_path / "absent.jsonl"), Job())
    with pytest.raises(ValueError, match=r"cannot open nosuchfs://x/jobs.csv"):
        read_table("nosuchfs://x/jobs.csv", Job())


def test_a_reference_uri_that_is_not_there_stops_the_batch_before_ray(tmp_path):
    pyarrow_or_skip()
    from comfyui_dreamo.dreamo_cli.ray_plan import check, fingerprint

    (tmp_path / "ref.png").write_bytes(b"one")
    job = Job(name="j", workflow=TINY, refs={1: f"file://{tmp_path}/ref.png", 2: f"file://{tmp_path}/gone.png"})
    with pytest.raises(UsageError, match=r"job 'j': reference file://.*/gone.png is not a file there"):
        check([job], None)
    job.refs = {1: f"file://{tmp_path}/ref.png"}
    texts, classes, uris = check([job], None)
    assert "DreamORefEncode" in classes and list(texts) == [TINY]
    before = fingerprint(job, uris)
    (tmp_path / "ref.png").write_bytes(b"other bytes")  # the picture at that URI changed: the job must run again
    assert fingerprint(job, check([job], None)[2]) != before


# -- the manifest ------------------------------------------------------------------------------------------
def test_the_manifest_marks_done_only_what_is_complete_with_the_same_settings(tmp_path):
    pyarrow_or_skip()
    import pyarrow.parquet as pq

    from comfyui_dreamo.dreamo_cli.job_table import Manifest, ManifestRow, Outputs

    out = Outputs(str(tmp_path / "out"))
    assert out.names() == set()  # not made yet
    m = Manifest(out.uri("manifest.parquet"), min_interval=3600)
    m.record(ManifestRow("a", "done", files=("a_01.png",), fingerprint="fa", seconds=1.5, worker=0))
    m.record(ManifestRow("b", "failed", error="rejected", fingerprint="fb"))
    m.record(ManifestRow("c", "done", files=("c_01.png", "c_02.png"), fingerprint="fc"))
    assert (tmp_path / "out" / "manifest.parquet").is_file()  # the first record is written at once ...
    m.flush()  # ... the others within min_interval, or at the end
    out.write("a_01.png", b"png")
    out.write("c_01.png", b"png")
    rows = pq.read_table(str(tmp_path / "out" / "manifest.parquet")).to_pylist()
    assert [r["job"] for r in rows] == ["a", "b", "c"] and rows[0]["files"] == ["a_01.png"]
    assert set(rows[0]) == {"job", "status", "server", "node", "worker", "attempts", "seconds", "files", "error",
                            "fingerprint", "finished"}
    again = Manifest(out.uri("manifest.parquet")).load()
    present = out.names()
    assert present == {"a_01.png", "c_01.png", "manifest.parquet"}
    assert again.done("a", "fa", present).files == ("a_01.png",)
    assert again.done("b", "fb", present) is None  # failed: runs again
    assert again.done("c", "fc", present) is None  # a file is missing: runs again
    assert again.done("new", "fn", present) is None
    with pytest.raises(ValueError, match="holds job 'a' made with other settings"):
        again.done("a", "other", present)
    assert not [n for n in os.listdir(tmp_path / "out") if n.endswith(".part")]


def test_a_damaged_manifest_says_to_move_it_away(tmp_path):
    pyarrow_or_skip()
    from comfyui_dreamo.dreamo_cli.job_table import Manifest

    (tmp_path / "manifest.parquet").write_bytes(b"not parquet")
    with pytest.raises(ValueError, match="cannot be read .*move it away"):
        Manifest(str(tmp_path / "manifest.parquet")).load()
