"""Which share of the work a rank takes, and what torchrun may start."""

from meddistill import distributed
from meddistill.cli import main


def _as_rank(monkeypatch, rank: int, world: int) -> None:
    monkeypatch.setattr(distributed, "rank", lambda: rank)
    monkeypatch.setattr(distributed, "world_size", lambda: world)


def test_one_process_takes_everything():
    assert distributed.share([5, 6, 7]) == [5, 6, 7]
    assert distributed.block(3) == range(0, 3)
    assert distributed.gather_objects("x") == ["x"]
    assert distributed.is_main()


def test_rank_one_of_two_takes_every_other_item_and_the_second_block(monkeypatch):
    _as_rank(monkeypatch, 1, 2)
    assert distributed.share([0, 1, 2, 3, 4]) == [1, 3]
    assert distributed.block(4) == range(2, 4)
    assert not distributed.is_main()


def test_launched_reads_torchruns_world_size(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert distributed.launched()
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert not distributed.launched()


def test_torchrun_refuses_a_command_that_runs_in_one_process(monkeypatch, capsys):
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["bench", "no-such-grid.yaml"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("meddistill bench: error: `meddistill bench` runs in one process")
    assert "buffer, distill, evaluate" in err and len(err.splitlines()) == 1


def test_one_window_keeps_old_run_ids_and_more_windows_change_them():
    from meddistill.matching.config import match_identity

    base = {"ipc": 1, "lr_img": 100.0}
    assert match_identity({**base, "windows_per_iteration": 1}) == base
    assert match_identity({**base, "windows_per_iteration": 2}) == {
        **base,
        "windows_per_iteration": 2,
    }
