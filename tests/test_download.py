"""dreamo-download against a loopback server that serves files the way the Hub does (HF_ENDPOINT points at it):
a fresh download, an interrupted one resumed, a corrupted one rejected and not left in the models folder, a 401
for a gated file turned into the licence instruction, facexlib's weights from their release URL. No test
touches the internet."""
import hashlib
import io
import os
from contextlib import redirect_stderr, redirect_stdout

import pytest

from dreamo_testkit import install_tree as t
from dreamo_testkit.fake_hub import FakeHub
from dreamo_cli import download, download_plan, transfer
from dreamo_cli.doctor import fmt_size
from dreamo_testkit import NETWORK_GUARD

CFG = "dreamo_cfg_distill.safetensors"


def run(*argv):
    out = io.StringIO()
    with redirect_stdout(out), redirect_stderr(out):
        code = download.main(list(argv))
    return code, out.getvalue()


@pytest.fixture
def hub(monkeypatch, tmp_path):
    """The fake Hub on loopback; any other connection attempt fails the test."""
    import socket

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    outside, getaddrinfo = [], socket.getaddrinfo

    def loopback_only(host, *args, **kw):
        if not (isinstance(host, str) and (host.startswith("127.") or host in ("localhost", "::1"))):
            outside.append(host)
            raise OSError(f"test network guard: {host} refused")
        return getaddrinfo(host, *args, **kw)
    monkeypatch.setattr(socket, "getaddrinfo", loopback_only)
    with FakeHub() as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        # huggingface-hub reads HF_ENDPOINT when it is imported (a fresh `dreamo-download` process sees it then);
        # here it may already be imported, and it asks its endpoint for more than our files (2.x: an agent list).
        import huggingface_hub.constants

        monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", server.url)
        yield server
    assert outside == [], f"the downloader tried to reach {outside}"


def lora_bytes(tmp_path, name="lora.safetensors", **kw) -> bytes:
    path = t.write_header_file(str(tmp_path / "src" / name), t.xlabs_lora(**kw))
    with open(path, "rb") as f:
        return f.read()


def install_without(tmp_path, *rels):
    root = t.full_install(str(tmp_path / "ComfyUI"))
    for rel in rels:
        os.remove(t.model(root, rel))
    return root


def leftovers(root):
    """Files anywhere under models/ other than the ones full_install wrote (staging included)."""
    found = []
    for dirpath, _, files in os.walk(os.path.join(root, "models")):
        found += [os.path.relpath(os.path.join(dirpath, f), root) for f in files]
    return found


def test_dry_run_prints_the_plan_with_exact_sizes_and_downloads_nothing(hub, tmp_path):
    body = lora_bytes(tmp_path, blocks=(2,), single=(3,))
    served = hub.add_hub_file("ByteDance/DreamO", CFG, body)
    root = install_without(tmp_path, "dreamo/" + CFG, "dreamo/v1.1/dreamo_dpo_lora.safetensors")
    dpo = hub.add_hub_file("ByteDance/DreamO", "v1.1/dreamo_dpo_lora.safetensors", body + b"")
    before = leftovers(root)
    code, text = run("--comfyui", root, "--dry-run")
    assert code == 0, text
    assert "ByteDance/DreamO (dreamo_cfg_distill.safetensors)" in text and "models/dreamo/" + CFG in text
    assert "ByteDance/DreamO (v1.1/dreamo_dpo_lora.safetensors)" in text
    assert f"total: {fmt_size(2 * len(body))} in 2 file(s)" in text and "≈" not in text.split("total:")[1]
    assert [m for m, _ in served.requests] == ["HEAD"] and [m for m, _ in dpo.requests] == ["HEAD"]
    assert leftovers(root) == before


def test_fresh_download_is_verified_and_moved_into_place(hub, tmp_path):
    body = lora_bytes(tmp_path, blocks=(2,), single=(3,))
    hub.add_hub_file("ByteDance/DreamO", CFG, body)
    root = install_without(tmp_path, "dreamo/" + CFG)
    code, text = run("--comfyui", root)
    assert code == 0, text
    target = t.model(root, "dreamo/" + CFG)
    with open(target, "rb") as f:
        assert hashlib.sha256(f.read()).hexdigest() == hashlib.sha256(body).hexdigest()
    assert "FLUX.1 LoRA (xlabs)" in text and "The doctor now finds everything in place." in text
    assert not [p for p in leftovers(root) if ".dreamo-download" in p and not p.endswith(".metadata")
                and "/.cache/" not in p]


def _range_starts(served):
    return [int(r[6:-1]) if r else 0 for m, r in served.requests if m == "GET"]


def test_interrupted_download_resumes_with_a_range_request(hub, tmp_path):
    body = lora_bytes(tmp_path, blocks=(2, 3), single=(3,))
    served = hub.add_hub_file("ByteDance/DreamO", CFG, body, drop_after=len(body) // 3)
    root = install_without(tmp_path, "dreamo/" + CFG)
    code, text = run("--comfyui", root)
    assert code == 0, text
    starts = _range_starts(served)
    assert len(starts) == 2 and starts[0] == 0 and 0 < starts[1] <= len(body) // 3, served.requests
    with open(t.model(root, "dreamo/" + CFG), "rb") as f:
        assert f.read() == body


def test_download_interrupted_in_one_run_resumes_in_the_next(hub, tmp_path):
    body = lora_bytes(tmp_path, blocks=(2, 3, 4, 5), single=(3,))
    served = hub.add_hub_file("ByteDance/DreamO", CFG, body, drop_after=len(body) // 10, drop_count=3)
    root = install_without(tmp_path, "dreamo/" + CFG)
    code, text = run("--comfyui", root)
    assert code == 1 and "run again to resume" in text, text
    assert not os.path.exists(t.model(root, "dreamo/" + CFG))
    kept = _range_starts(served)
    code, text = run("--comfyui", root)
    assert code == 0, text
    starts = _range_starts(served)[len(kept):]
    assert len(starts) == 1 and starts[0] >= kept[-1] > 0  # the second run went on from what the first kept
    with open(t.model(root, "dreamo/" + CFG), "rb") as f:
        assert f.read() == body


def test_facexlib_weights_come_from_their_release_url_and_resume(hub, tmp_path):
    import torch

    t.write_face_file(str(tmp_path / "src" / "det.pth"), "mobile0.25")
    body = (tmp_path / "src" / "det.pth").read_bytes()
    served = hub.add_plain_file("/facexlib/v0.1.0/detection_mobilenet0.25_Final.pth", body,
                                drop_after=len(body) // 8, drop_count=3)
    t.write_face_file(str(tmp_path / "src" / "parser.pth"), None)
    hub.add_plain_file("/facexlib/v0.2.0/parsing_bisenet.pth", (tmp_path / "src" / "parser.pth").read_bytes())
    root = t.full_install(str(tmp_path / "ComfyUI"))
    wf = tmp_path / "wf.json"
    wf.write_text('{"1": {"class_type": "DreamOPreprocessorLoader", "inputs": {"face_detector": '
                  '"retinaface_mobile0.25", "background_remover": "none"}}}')
    args = ("--comfyui", root, "--workflow", str(wf), "--facexlib-url", hub.url + "/facexlib")
    code, text = run(*args)
    assert code == 1 and "run again to resume" in text, text
    assert not os.path.exists(t.model(root, "facexlib/detection_mobilenet0.25_Final.pth"))
    assert os.path.isfile(t.model(root, "facexlib/parsing_bisenet.pth"))  # the other file went through
    code, text = run(*args)
    assert code == 0, text
    assert 0 < _range_starts(served)[-1] < len(body)
    sd = torch.load(t.model(root, "facexlib/detection_mobilenet0.25_Final.pth"), weights_only=True)
    assert set(sd) == set(t.random_face_state("mobile0.25"))


def test_corrupted_download_is_rejected_and_not_left_in_the_models_folder(hub, tmp_path):
    body = lora_bytes(tmp_path, blocks=(2,), single=(3,))
    bad = bytearray(body)
    bad[-10] ^= 0xFF
    hub.add_hub_file("ByteDance/DreamO", CFG, bytes(bad), sha256=hashlib.sha256(body).hexdigest())
    root = install_without(tmp_path, "dreamo/" + CFG)
    before = leftovers(root)
    code, text = run("--comfyui", root)
    assert code == 1
    assert "FAILED" in text and "sha256" in text and "corrupted" in text
    assert not os.path.exists(t.model(root, "dreamo/" + CFG))
    assert [p for p in leftovers(root) if p not in before and p.endswith(".safetensors")] == []


def test_wrong_file_from_the_server_fails_the_content_check(hub, tmp_path):
    body = lora_bytes(tmp_path, hidden=2048)  # a LoRA for another model size, with an honest sha256
    hub.add_hub_file("ByteDance/DreamO", CFG, body)
    root = install_without(tmp_path, "dreamo/" + CFG)
    code, text = run("--comfyui", root)
    assert code == 1 and "failed the content check" in text and "does not fit" in text
    assert not os.path.exists(t.model(root, "dreamo/" + CFG))


def test_gated_repo_gives_the_licence_instruction(hub, tmp_path):
    served = hub.add_hub_file("black-forest-labs/FLUX.1-dev", "flux1-dev.safetensors", b"x" * 100, gated=True)
    root = install_without(tmp_path, "diffusion_models/flux1-dev.safetensors")
    for argv in (("--dry-run",), ()):
        code, text = run("--comfyui", root, *argv)
        assert code == 1, text
        assert "black-forest-labs/FLUX.1-dev is gated" in text
        assert f"Open {hub.url}/black-forest-labs/FLUX.1-dev" in text and "accept the licence" in text
        assert "hf auth login" in text and "HF_TOKEN" in text
    assert not os.path.exists(t.model(root, "diffusion_models/flux1-dev.safetensors"))
    assert all(m == "HEAD" for m, _ in served.requests)


def test_token_is_sent_to_the_hub(hub, tmp_path, monkeypatch):
    body = lora_bytes(tmp_path, blocks=(2,), single=(3,))
    hub.add_hub_file("ByteDance/DreamO", CFG, body)
    seen = []
    handler = hub.server.RequestHandlerClass
    original = handler.do_HEAD

    def spy(self):
        seen.append(self.headers.get("Authorization"))
        original(self)
    monkeypatch.setattr(handler, "do_HEAD", spy)
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    root = install_without(tmp_path, "dreamo/" + CFG)
    assert run("--comfyui", root, "--dry-run")[0] == 0
    assert seen and seen[0] == "Bearer hf_test_token"


def test_existing_bad_file_is_never_overwritten(hub, tmp_path):
    hub.add_hub_file("ByteDance/DreamO", CFG, lora_bytes(tmp_path))
    root = t.full_install(str(tmp_path / "ComfyUI"))
    t.write_header_file(t.model(root, "dreamo/" + CFG), t.sdxl_unet())
    before = os.path.getsize(t.model(root, "dreamo/" + CFG))
    code, text = run("--comfyui", root)
    assert code == 1 and "failed its check (not overwritten)" in text and "nothing to download" in text
    assert os.path.getsize(t.model(root, "dreamo/" + CFG)) == before


def test_login_stored_under_hf_home_is_used(hub, tmp_path):
    """A fresh process (huggingface-hub reads HF_HOME at import) finds the token `hf auth login` stored there."""
    import subprocess
    import sys

    hub.add_hub_file("ByteDance/DreamO", CFG, lora_bytes(tmp_path))
    seen = []
    handler = hub.server.RequestHandlerClass
    original = handler.do_HEAD

    def spy(self):
        seen.append(self.headers.get("Authorization"))
        original(self)
    handler.do_HEAD = spy
    try:
        home = tmp_path / "hf_home_login"
        home.mkdir()
        (home / "token").write_text("hf_stored_login_token")
        root = install_without(tmp_path, "dreamo/" + CFG)
        log = tmp_path / "network_attempts.log"
        env = dict(os.environ, HF_HOME=str(home), HF_ENDPOINT=hub.url, DREAMO_NETWORK_LOG=str(log),
                   PYTHONPATH=NETWORK_GUARD)
        env.pop("HF_TOKEN", None)
        r = subprocess.run([sys.executable, "-m", "dreamo_cli.download", "--comfyui", root, "--dry-run"],
                           cwd=t.REPO, env=env, capture_output=True, text=True, timeout=120)
    finally:
        handler.do_HEAD = original
    assert r.returncode == 0, r.stdout + r.stderr
    assert seen == ["Bearer hf_stored_login_token"]
    assert not log.exists() or log.read_text() == ""


# ---- offline, and a wrong or hostile server (issues 18 and 19): every case bounded in time and bytes ----------

def closed_port() -> int:
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def staged(root, name):
    return os.path.join(root, "models", ".dreamo-download", name)


THREE = ("dreamo/" + CFG, "dreamo/v1.1/dreamo_sft_lora.safetensors", "dreamo/v1.1/dreamo_dpo_lora.safetensors")


def test_offline_the_host_is_named_once_and_no_file_is_attempted(hub, tmp_path, monkeypatch):
    port = closed_port()
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", f"http://127.0.0.1:{port}")
    root = install_without(tmp_path, *THREE)
    code, text = run("--comfyui", root)
    assert code == 1, text
    assert "Downloading" not in text and "FAILED" not in text, text
    assert text.count("could not be reached") == 1 and "Connection refused)" in text, text
    assert f"NOT ATTEMPTED: 3 file(s) from 127.0.0.1:{port}" in text, text
    assert "(Caused" not in text and "0 bytes kept" not in text, text
    assert not os.path.exists(os.path.join(root, "models", ".dreamo-download")), "nothing staged when offline"


def test_host_lost_during_the_run_stops_the_others_with_one_line(hub, tmp_path, monkeypatch):
    body = lora_bytes(tmp_path, blocks=(2,), single=(3,))
    for rel in THREE:
        hub.add_hub_file("ByteDance/DreamO", rel.split("/", 1)[1], body)
    root = install_without(tmp_path, *THREE)
    render = download.render_plan

    def then_go_offline(*a, **kw):  # the plan reached the Hub; then the connection goes away
        hub.server.shutdown()
        hub.server.server_close()
        return render(*a, **kw)
    monkeypatch.setattr(download, "render_plan", then_go_offline)
    code, text = run("--comfyui", root)
    assert code == 1, text
    failed = [line for line in text.splitlines() if line.startswith("FAILED")]
    assert len(failed) == 1 and failed[0].endswith("Connection refused)."), failed
    assert f"NOT ATTEMPTED: 2 file(s) from {download_plan.host_of(hub.url)}" in text, text
    assert text.count("Downloading ") == 1 and "bytes kept" not in text and "(Caused" not in text, text


def test_error_text_is_shortened_at_a_word_boundary():
    long = "Failed to establish a new connection: " + "word " * 80
    short_text = download_plan.shorten(long, 120)
    assert len(short_text) <= 120 and short_text.endswith("…") and short_text[:-1].endswith("word")


def test_dry_run_total_says_which_files_its_figure_covers(hub, tmp_path, monkeypatch):
    from dreamo_cli.catalog import FACE_SOURCES

    port = closed_port()
    monkeypatch.setattr(__import__("huggingface_hub.constants").constants, "ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    root = install_without(tmp_path, *THREE)
    code, text = run("--comfyui", root, "--dry-run", "--id", "--facexlib-url", f"http://127.0.0.1:{port}/x")
    known = sum(FACE_SOURCES[n].approx_size for n in ("detection_Resnet50_Final.pth", "parsing_bisenet.pth"))
    assert (f"total: 5 file(s): {fmt_size(known, approx=True)} for the 2 of known size, and 3 more of "
            "unknown size.") in text, text
    assert "(+" not in text and text.count("could not be reached") == 1, text


def test_a_body_longer_than_announced_is_cut_at_the_announced_size_and_discarded(hub, tmp_path):
    body = lora_bytes(tmp_path, blocks=(2,), single=(3,))
    served = hub.add_hub_file("ByteDance/DreamO", CFG, body, get_length=False, extra=256 << 20)
    root = install_without(tmp_path, "dreamo/" + CFG)
    code, text = run("--comfyui", root)
    assert code == 1, text
    assert f"sent more than {len(body)} bytes, the size the server announced" in text, text
    assert "Traceback" not in text and not os.path.exists(t.model(root, "dreamo/" + CFG))
    assert not [p for p in leftovers(root) if ".dreamo-download" in p], leftovers(root)
    assert served.sent < 64 << 20, f"the client kept reading: the server wrote {served.sent} bytes"


def _face_workflow(tmp_path):
    wf = tmp_path / "wf.json"
    wf.write_text('{"1": {"class_type": "DreamOPreprocessorLoader", "inputs": {"face_detector": '
                  '"retinaface_mobile0.25", "background_remover": "none"}}}')
    return str(wf)


def test_a_body_without_any_announced_size_is_capped_at_its_published_size(hub, tmp_path):
    from dreamo_cli.catalog import FACE_SOURCES

    name = "detection_mobilenet0.25_Final.pth"
    t.write_face_file(str(tmp_path / "src" / "det.pth"), "mobile0.25")
    body = (tmp_path / "src" / "det.pth").read_bytes()
    served = hub.add_plain_file(f"/facexlib/v0.1.0/{name}", body, head_status=405, get_length=False,
                                extra=256 << 20)
    root = t.full_install(str(tmp_path / "ComfyUI"))
    t.write_face_file(str(tmp_path / "src" / "parser.pth"), None)
    hub.add_plain_file("/facexlib/v0.2.0/parsing_bisenet.pth", (tmp_path / "src" / "parser.pth").read_bytes())
    code, text = run("--comfyui", root, "--workflow", _face_workflow(tmp_path), "--facexlib-url",
                     hub.url + "/facexlib")
    cap = int(FACE_SOURCES[name].approx_size * transfer.UNANNOUNCED_FACTOR)
    assert f"sent more than {cap} bytes, 1.25x the published size" in text, text
    assert not os.path.exists(staged(root, f"facexlib--{name}.part"))
    assert served.sent < 64 << 20


@pytest.mark.parametrize("how", ["announced", "416"])
def test_a_partial_file_longer_than_the_file_is_discarded_and_fetched_again(hub, tmp_path, how):
    """A .part longer than the file (another file's leftovers, a server that changed) made every later run fail
    with HTTP 416 while saying 'run again to resume': it is discarded, said so, and the file fetched afresh. With
    the size announced (the Hub's HEAD) it is seen before asking; without (a release server refusing HEAD), from
    the server's 416 answer."""
    if how == "announced":
        body = lora_bytes(tmp_path, blocks=(2,), single=(3,))
        served = hub.add_hub_file("ByteDance/DreamO", CFG, body)
        root = install_without(tmp_path, "dreamo/" + CFG)
        part, target, argv = staged(root, f"ByteDance--DreamO--{CFG}.part"), "dreamo/" + CFG, ()
    else:
        name = "detection_mobilenet0.25_Final.pth"
        with open(t.write_face_file(str(tmp_path / "src" / "det.pth"), "mobile0.25"), "rb") as f:
            body = f.read()
        served = hub.add_plain_file(f"/facexlib/v0.1.0/{name}", body, head_status=405)
        t.write_face_file(str(tmp_path / "src" / "parser.pth"), None)
        hub.add_plain_file("/facexlib/v0.2.0/parsing_bisenet.pth", (tmp_path / "src" / "parser.pth").read_bytes())
        root = t.full_install(str(tmp_path / "ComfyUI"))
        part, target = staged(root, f"facexlib--{name}.part"), "facexlib/" + name
        argv = ("--workflow", _face_workflow(tmp_path), "--facexlib-url", hub.url + "/facexlib")
    os.makedirs(os.path.dirname(part))
    with open(part, "wb") as f:
        f.write(b"\1" * (len(body) + 1000))
    code, text = run("--comfyui", root, *argv)
    assert code == 0, text
    assert f"discarded {part}: {len(body) + 1000} bytes kept" in text, text
    with open(t.model(root, target), "rb") as f:
        assert f.read() == body
    assert _range_starts(served)[-1] == 0 and len(_range_starts(served)) == (2 if how == "416" else 1)


def _timed_run(*argv):
    import time

    start = time.monotonic()
    code, text = run(*argv)
    return code, text, time.monotonic() - start


@pytest.mark.parametrize("trickle,said", [((1, 0.2), "less than 64 KiB in 1 s"),
                                          ((1, 3.0), "nothing received for 1 s")])
def test_a_trickling_server_is_stopped_by_the_stall_timeout_and_the_bytes_kept(hub, tmp_path, trickle, said):
    body = lora_bytes(tmp_path, blocks=(2,), single=(3,))
    hub.add_hub_file("ByteDance/DreamO", CFG, body, trickle=trickle)
    root = install_without(tmp_path, "dreamo/" + CFG)
    code, text, seconds = _timed_run("--comfyui", root, "--stall-timeout", "1")
    assert code == 1 and said in text and "run again to resume from the" in text, text
    assert seconds < 15, f"took {seconds:.1f} s"  # three tries of about 1 s each
    assert os.path.getsize(staged(root, f"ByteDance--DreamO--{CFG}.part")) > 0


def test_the_deadline_stops_a_slow_but_steady_download_and_the_files_after_it(hub, tmp_path):
    body = lora_bytes(tmp_path, blocks=(2,), single=(3,))
    slow = os.urandom(8 << 20)  # 8 MB at 80 KiB every 0.1 s: steady enough for the stall check, ~10 s in all
    hub.add_hub_file("ByteDance/DreamO", CFG, slow, trickle=(80 << 10, 0.1))
    hub.add_hub_file("ByteDance/DreamO", "v1.1/dreamo_sft_lora.safetensors", body)
    root = install_without(tmp_path, "dreamo/" + CFG, "dreamo/v1.1/dreamo_sft_lora.safetensors")
    code, text, seconds = _timed_run("--comfyui", root, "--stall-timeout", "1", "--deadline", "1.5")
    assert code == 1 and "the --deadline passed" in text and "run again to resume from the" in text, text
    assert "NOT ATTEMPTED: 1 file(s): the --deadline passed" in text, text
    assert seconds < 8, f"took {seconds:.1f} s"


def test_bad_limits_are_refused():
    for argv in (("--stall-timeout", "0"), ("--deadline", "-1"), ("--deadline", "nan")):
        with pytest.raises(SystemExit) as e:
            run("--comfyui", "nowhere", *argv)
        assert e.value.code == 2


def test_with_no_size_known_anywhere_the_hard_cap_applies(hub, tmp_path, monkeypatch):
    """No HEAD size, no Content-Length and no published size: the body stops at UNANNOUNCED_MAX (48 GB; here made
    small) and is discarded."""
    from dreamo_cli.catalog import Source
    from dreamo_cli.diagnosis import FileResult

    monkeypatch.setattr(transfer, "UNANNOUNCED_MAX", 300_000)
    served = hub.add_plain_file("/files/v1/blob.bin", b"\1" * 1000, get_length=False, extra=64 << 20)
    src = Source("blob.bin", url_path="v1/blob.bin")
    item = download_plan.Item(FileResult(None, "missing"), src, str(tmp_path / "blob.bin"))
    with pytest.raises(transfer.DownloadError, match="sent more than 300000 bytes, the largest file this "
                                                     "downloader accepts, as the server announced no size"):
        transfer.fetch(item, str(tmp_path / "staging"), None, hub.url + "/files", log=lambda m: None)
    assert not os.listdir(tmp_path / "staging") and served.sent < 48 << 20


def test_without_the_package_a_check_needs_the_verified_file_is_kept_and_said_unchecked(hub, tmp_path, monkeypatch):
    """A download run from the light install (no torch) must not delete a good file because its content check
    cannot run: size and sha256 are verified, the file is kept, and both the line and the doctor say so."""
    from dreamo_cli import content_checks

    def needs_torch(path):
        raise ModuleNotFoundError("No module named 'torch'", name="torch")
    monkeypatch.setitem(content_checks.CHECKS, "lora", needs_torch)
    body = lora_bytes(tmp_path, blocks=(2,), single=(3,))
    hub.add_hub_file("ByteDance/DreamO", CFG, body)
    root = install_without(tmp_path, "dreamo/" + CFG)
    code, text = run("--comfyui", root)
    assert code == 1, text  # not confirmed: the doctor cannot check it here
    assert "size and sha256 verified; its contents were not checked: the Python package 'torch'" in text, text
    with open(t.model(root, "dreamo/" + CFG), "rb") as f:
        assert f.read() == body
