"""Issue 9, points 1-4, 8 and 11: run and buffer folders. A buffer is named by everything that
shapes it; names from configs never leave the runs folder; one process per folder; OS errors
are one line; temporaries of dead writers are removed; a resumed run's metrics hold each step
once; evaluation settings do not change the identity of a distillation."""

from __future__ import annotations

import errno
import json
import os
import signal
import time
from pathlib import Path

import pytest
import torch
from faulthelpers import changed, hostile, run_cli, snapshot
from imagefolders import image_folder
from safetensors.torch import load_file

from meddistill.cli import main
from meddistill.locking import LOCK_FILE

TINY = ["--no-progress", "--threads", "1"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(dataset folder, buffer folder): 1 expert x 2 epochs of a width-4 ConvNet on 8 px."""
    base = tmp_path_factory.mktemp("faults-runs")
    ds = image_folder(base / "ds", {"a": 6, "b": 6, "c": 6})
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MEDDISTILL_CACHE", str(base / "cache"))
        argv = ["buffer", "--dataset", f"folder:{ds}", "--out", str(base / "buf"), *TINY]
        assert main([*argv, "--experts", "1", "--epochs", "2", "buffer.model.width=4"]) == 0
    return ds, base / "buf"


def distill(ds: Path, buf: Path | None, *extra: str) -> list[str]:
    """A distill command of a few iterations on the tiny data."""
    given = ["--buffer", str(buf)] if buf is not None else []
    return [
        "distill", "--method", "hoptm", "--dataset", f"folder:{ds}", *given, "--ipc", "1",
        "--iterations", "6", "--seed", "3", "model.width=4", "match.syn_steps=2",
        "match.expert_epochs=1", "match.max_start=1", "match.checkpoint_every=1",
        "final_eval=false", *TINY, *extra,
    ]  # fmt: skip


# 1. Buffer identity ------------------------------------------------------------------------

BUFFER = ["buffer", "--experts", "1", "--epochs", "1", "buffer.model.width=4", *TINY]


@pytest.mark.parametrize(
    "other", ["dataset.resize_to=16", "dataset.split_seed=1", "dataset.channels=1"]
)
def test_the_same_data_loaded_another_way_gets_its_own_buffer(workdir, tiny, other):
    ds, _ = tiny
    assert main([*BUFFER, "--dataset", f"folder:{ds}"]) == 0
    assert main([*BUFFER, "--dataset", f"folder:{ds}", other]) == 0  # no collision, no refusal
    made = sorted((workdir / "runs" / "buffers").iterdir())
    assert len(made) == 2
    metas = [json.loads((b / "buffer.json").read_text()) for b in made]
    assert metas[0]["buffer_id"] != metas[1]["buffer_id"]


def test_buffer_and_distill_name_the_same_buffer_alike(workdir, tiny):
    ds, _ = tiny
    assert main([*BUFFER, "--dataset", f"folder:{ds}", "--epochs", "2"]) == 0
    argv = distill(ds, None, "experts.num_experts=1", "experts.epochs=2", "experts.model.width=4")
    argv += ["expert_optimizer=sgd"]  # `buffer` trains with SGD, HoP-TM's default is GSAM
    assert main(argv) == 0
    assert len(list((workdir / "runs" / "buffers").iterdir())) == 1  # reused, not made again


# 2. Names from config values never leave the runs folder --------------------------------


@pytest.mark.parametrize(
    ("argv", "names"),
    [
        (["coreset", "selection=/../../../x", "--ipc", "1"], ["unknown method '/../../../x'"]),
        (["coreset", "selection=../../x", "--ipc", "1"], ["unknown method '../../x'"]),
        (["distill", "--method", "../../evil", "--ipc", "1"], ["unknown method '../../evil'"]),
        (["distill", "method=..", "--ipc", "1"], ["unknown method '..'"]),
    ],
)
def test_a_path_in_a_name_is_refused_before_anything_is_written(capsys, workdir, tiny, argv, names):
    ds, _ = tiny
    full = [*argv, "--dataset", f"folder:{ds}", "--runs-dir", str(workdir / "runs"), *TINY]
    hostile(capsys, workdir.parent, full, contains=tuple(names))


def test_a_dataset_name_with_dots_and_slashes_is_one_folder_inside_runs(workdir, tiny):
    from meddistill.runs import inside, slug

    assert slug("../../x") == "_.._x" and slug("..") == "_" and slug("folder:/a/b") == "folder__a_b"
    assert "/" not in slug("a/../../b") and not slug(".hidden").startswith(".")
    with pytest.raises(Exception, match="outside"):
        inside(workdir / "runs", workdir / "runs" / ".." / "x", "run folder")


# 3. One process per folder; only dead writers' temporaries are removed ---------------------


def test_a_second_process_on_the_same_run_folder_is_refused(capsys, workdir, tiny):
    ds, buf = tiny
    out = workdir / "run"
    out.mkdir()
    live_tmp = out / ".checkpoint.safetensors.live.tmp"
    holder = run_cli(
        ["-c", "import sys, time; from meddistill.locking import folder_lock\n"
         f"with folder_lock({str(out)!r}, 'run folder'):\n print('held', flush=True); time.sleep(60)"],
        workdir,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        live_tmp.write_bytes(b"being written by the holder")
        msg = hostile(capsys, workdir, distill(ds, buf, "--out", str(out)))
        assert f"run folder {out} is in use by another meddistill process (pid {holder.pid})" in msg
        assert live_tmp.is_file()  # a live writer's temporary is never touched
    finally:
        holder.kill()
        holder.communicate()
    # its owner is dead now: the next run takes the folder and removes the temporary
    assert main(distill(ds, buf, "--out", str(out))) == 0
    assert not live_tmp.exists()


def test_temporaries_of_a_killed_final_write_are_removed_on_the_next_run(workdir, tiny):
    ds, buf = tiny
    out = workdir / "run"
    assert main(distill(ds, buf, "--out", str(out))) == 0
    left = [
        out / "synthetic" / ".synthetic.safetensors.k1.tmp",
        out / "synthetic" / ".meta.json.k2.tmp",
        out / "grids" / ".class_00_a.png.k3.tmp",
    ]
    for path in left:
        path.write_bytes(b"cut short")
    assert main(distill(ds, buf, "--out", str(out))) == 0
    assert [p for p in left if p.exists()] == []
    assert not list(out.rglob("*.tmp"))


def test_two_buffer_processes_on_one_folder_never_both_write(workdir, tiny):
    ds, _ = tiny
    out = workdir / "buf"
    argv = ["buffer", "--dataset", f"folder:{ds}", "--out", str(out), "--experts", "3"]
    argv += ["--epochs", "3", "buffer.model.width=4", *TINY]
    first = run_cli(argv, workdir)
    deadline = time.monotonic() + 60
    while not (out / LOCK_FILE).exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    second = run_cli(argv, workdir)
    out2, err2 = second.communicate(timeout=120)
    out1, err1 = first.communicate(timeout=120)
    assert first.returncode == 0, err1
    if second.returncode != 0:  # refused while the first held the folder
        assert err2.count("\n") == 1 and "is in use by another meddistill process" in err2
    assert "Traceback" not in err1 + err2
    assert sorted(p.name for p in out.glob("expert_*.safetensors")) == [
        "expert_000.safetensors", "expert_001.safetensors", "expert_002.safetensors",
    ]  # fmt: skip


# 4. OS errors: one line, exit non-zero, the last good checkpoint kept ----------------------


def test_a_full_disk_during_a_checkpoint_keeps_the_last_good_one(
    capsys, workdir, tiny, monkeypatch
):
    ds, buf = tiny
    out = workdir / "run"
    import meddistill.matching.state as state

    real, calls = state.save_file, {"n": 0}

    def fill_up(tensors, path, metadata=None):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(tensors, path, metadata=metadata)

    monkeypatch.setattr(state, "save_file", fill_up)
    msg = hostile(capsys, workdir, distill(ds, buf, "--out", str(out)), allowed=("run",))
    assert msg.startswith("No space left on device: ") and "the disk is full" in msg
    assert "last good checkpoint" in msg
    from safetensors import safe_open

    with safe_open(str(out / "checkpoint.safetensors"), framework="pt") as fh:
        assert fh.metadata()["iteration"] == "2"
    assert not list(out.rglob("*.tmp")) and not (out / "synthetic").exists()


def test_a_full_disk_while_writing_the_grids_leaves_no_partial_png(
    capsys, workdir, tiny, monkeypatch
):
    ds, buf = tiny
    import PIL.Image

    def full(self, fp, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(fp))

    monkeypatch.setattr(PIL.Image.Image, "save", full)
    hostile(capsys, workdir, distill(ds, buf, "--out", "run"), contains=("disk is full",),
            allowed=("run",))  # fmt: skip
    assert not list((workdir / "run").rglob("*.tmp"))


@pytest.mark.parametrize("flag", ["--out", "--runs-dir"])
def test_an_output_folder_that_is_a_file(capsys, workdir, tiny, flag):
    ds, buf = tiny
    (workdir / "taken").write_text("a file")
    msg = hostile(capsys, workdir, distill(ds, buf, flag, str(workdir / "taken")))
    assert "taken" in msg and ("is a file" in msg or "not a folder" in msg or "in the way" in msg)


def test_a_read_only_runs_folder(capsys, workdir, tiny, monkeypatch):
    ds, buf = tiny
    import meddistill.locking as locking

    def denied(self, *args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(self))

    monkeypatch.setattr(locking.Path, "mkdir", denied)
    msg = hostile(capsys, workdir, distill(ds, buf, "--out", "run"))
    assert msg.startswith("Permission denied: ") and "choose a folder you can write to" in msg


# 8. Kill at random moments, resume: the same set, each step once in metrics.jsonl --------


def _kill_when(proc, ckpt: Path, reached: int) -> None:
    from safetensors import safe_open

    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            with safe_open(str(ckpt), framework="pt") as fh:
                if int(fh.metadata()["iteration"]) >= reached:
                    break
        except Exception:  # not there yet, or mid-rename
            pass
        time.sleep(0.002)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate()


def test_killed_twice_at_random_steps_resumes_to_the_same_set(workdir, tiny):
    ds, buf = tiny
    gen = torch.Generator().manual_seed(9)
    points = sorted(torch.randint(1, 6, (2,), generator=gen).tolist())
    out = workdir / "killed"
    for point in points:
        _kill_when(
            run_cli(distill(ds, buf, "--out", str(out)), workdir),
            out / "checkpoint.safetensors",
            point,
        )
    assert main(distill(ds, buf, "--out", str(out))) == 0
    assert main(distill(ds, buf, "--out", str(workdir / "whole"))) == 0
    got = load_file(str(out / "synthetic" / "synthetic.safetensors"))
    want = load_file(str(workdir / "whole" / "synthetic" / "synthetic.safetensors"))
    assert all(torch.equal(got[k], want[k]) for k in want)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r["iteration"] for r in records if r["stage"] == "distill"]
    assert steps == list(range(6))  # every step once, in order
    assert not list(out.rglob("*.tmp"))


def test_a_line_cut_short_in_metrics_is_dropped_on_resume(workdir, tiny):
    ds, buf = tiny
    out = workdir / "run"
    assert main(distill(ds, buf, "--out", str(out), "--iterations", "3")) == 0
    with open(out / "metrics.jsonl", "a") as fh:
        fh.write('{"stage": "distill", "iterat')  # a kill mid-line
    assert main(distill(ds, buf, "--out", str(out), "--iterations", "3")) == 0
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["iteration"] for line in lines] == [0, 1, 2]


# 11. Evaluation settings do not change the identity of a distillation --------------------


def test_changing_only_eval_re_evaluates_the_same_set(workdir, tiny):
    ds, buf = tiny
    base = [a for a in distill(ds, buf) if a != "final_eval=false"]
    base += ["eval.num_nets=1", "eval.epochs=2"]
    assert main(base) == 0
    assert main([*base, "eval.epochs=3"]) == 0
    runs = list((workdir / "runs" / "distill").iterdir())
    assert len(runs) == 1  # the same folder: the set was not made again
    run = runs[0]
    assert "was made by this configuration; evaluating it again" in (run / "log.txt").read_text()
    results = json.loads((run / "results.json").read_text())
    earlier = list(run.glob("results.*.json"))
    assert len(earlier) == 1 and json.loads(earlier[0].read_text())["eval_id"] != results["eval_id"]
    finals = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    finals = [r for r in finals if r["stage"] == "final_eval"]
    assert len(finals) == 2 and finals[0]["eval_id"] != finals[1]["eval_id"]
    assert main([*base, "eval.epochs=3"]) == 0  # the same settings again: no duplicate
    finals = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert len([r for r in finals if r["stage"] == "final_eval"]) == 2


def test_the_thread_count_is_recorded(workdir, tiny):
    ds, buf = tiny
    assert main(distill(ds, buf, "--out", "run")) == 0
    assert json.loads((workdir / "run" / "env.json").read_text())["threads"] == 1


def test_snapshot_helpers_see_changes(workdir):
    (workdir / "f").write_text("x")
    before = snapshot(workdir)
    (workdir / "g").write_text("y")
    assert changed(before, snapshot(workdir)) == ["g"]
    assert changed(before, snapshot(workdir), allowed=("g",)) == []


def test_a_full_disk_while_saving_the_set_leaves_no_set_without_metadata(
    capsys, workdir, tiny, monkeypatch
):
    ds, buf = tiny
    import meddistill.data.synthetic as synthetic

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", "meta.json")

    monkeypatch.setattr(synthetic, "json_text", full)
    hostile(capsys, workdir, distill(ds, buf, "--out", "run"), contains=("disk is full",),
            allowed=("run",))  # fmt: skip
    folder = workdir / "run" / "synthetic"
    assert not folder.exists() or list(folder.iterdir()) == []


@pytest.mark.parametrize("target", ["folder", "missing/deeper/x.npz"])
def test_export_to_a_folder_or_below_a_file(capsys, workdir, tiny, target):
    ds, buf = tiny
    assert main(distill(ds, buf, "--out", "run")) == 0
    (workdir / "folder").mkdir()
    (workdir / "missing").write_text("a file, not a folder")
    argv = ["export", str(workdir / "run" / "synthetic"), "--out", str(workdir / target)]
    hostile(capsys, workdir, argv)
