"""`recurrent-ppo plot`: learning curves from metrics.jsonl to a PNG; missing or empty metrics fail clearly."""

import json
import math

import pytest
from matplotlib.image import imread

from recurrent_ppo.cli import main
from recurrent_ppo.plot import MetricsError, plot_run

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def write_metrics(run_dir, rows):
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))


def fake_rows(n=20):
    # The first iteration has no finished episode yet, so its mean return is NaN, as in real runs.
    return [{"iteration": i, "global_step": 4096 * (i + 1), "episode_return_mean": math.nan if i == 0 else 10.0 * i,
             "sps": 20_000.0 + 100 * i, "loss": 0.1} for i in range(n)]


def assert_png(path):
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE), f"{path} is not a PNG"
    assert len(data) > 10_000, f"{path} is only {len(data)} bytes: nothing was drawn"
    height, width, _ = imread(path).shape
    assert (width, height) == (1000, 360), "two 5 x 3.6 inch panels at 100 dpi"


def test_plot_command_writes_curves_png_into_the_run_dir(tmp_path, capsys):
    run = tmp_path / "run"
    write_metrics(run, fake_rows())
    assert main(["plot", str(run)]) == 0
    assert_png(run / "curves.png")
    assert str(run / "curves.png") in capsys.readouterr().out


def test_plot_out_flag_picks_the_path(tmp_path):
    run = tmp_path / "run"
    write_metrics(run, fake_rows())
    out = tmp_path / "figures" / "cartpole.png"
    assert main(["plot", str(run), "--out", str(out)]) == 0
    assert_png(out)
    assert not (run / "curves.png").exists()


def test_plot_of_a_single_iteration_still_draws(tmp_path):
    run = tmp_path / "run"
    write_metrics(run, fake_rows(n=2))
    assert plot_run(run) == run / "curves.png"
    assert (run / "curves.png").read_bytes().startswith(PNG_SIGNATURE)


@pytest.mark.parametrize("content,message", [
    (None, "metrics.jsonl does not exist"),
    ("", "metrics.jsonl is empty"),
    ("\n\n", "metrics.jsonl is empty"),
], ids=["missing", "empty", "blank-lines"])
def test_plot_without_metrics_exits_2_naming_the_file(tmp_path, capsys, content, message):
    run = tmp_path / "run"
    run.mkdir()
    if content is not None:
        (run / "metrics.jsonl").write_text(content)
    assert main(["plot", str(run)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("recurrent-ppo plot: ") and str(run / "metrics.jsonl") in err and message in err, err
    assert not (run / "curves.png").exists()


def test_malformed_or_incomplete_metrics_name_the_line(tmp_path):
    run = tmp_path / "run"
    write_metrics(run, fake_rows(n=2))
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"global_step": 3\n')
    with pytest.raises(MetricsError, match=r"metrics.jsonl:3 is not valid JSON"):
        plot_run(run)
    write_metrics(run, [{"global_step": 1, "episode_return_mean": 1.0, "sps": 1.0}, {"global_step": 2, "sps": 1.0}])
    with pytest.raises(MetricsError, match=r"metrics.jsonl: line 2 has no 'episode_return_mean'"):
        plot_run(run)
