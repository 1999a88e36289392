"""FLOP report: DropToken savings match the paper's VATT-MBS table."""

import pytest

from vatt.flops import PAPER_MBS_GFLOPS, forward_gflops, main


@pytest.fixture(scope="module")
def mbs_flops():
    return {rate: forward_gflops("mbs", rate) for rate in PAPER_MBS_GFLOPS}


def test_mbs_forward_flops_at_zero_droptoken_is_within_15_percent_of_paper(mbs_flops):
    assert abs(mbs_flops[0.0]["total"] - 784.8) / 784.8 < 0.15


@pytest.mark.parametrize("rate", [0.25, 0.5, 0.75])
def test_mbs_droptoken_flop_ratios_match_the_paper(mbs_flops, rate):
    ours = mbs_flops[rate]["total"] / mbs_flops[0.0]["total"]
    paper = PAPER_MBS_GFLOPS[rate] / PAPER_MBS_GFLOPS[0.0]
    assert abs(ours - paper) < 0.03


def test_droptoken_does_not_touch_text_flops(mbs_flops):
    assert mbs_flops[0.5]["text"] == pytest.approx(mbs_flops[0.0]["text"])
    assert mbs_flops[0.5]["video"] < 0.5 * mbs_flops[0.0]["video"]


def test_attention_flops_are_counted():
    # video Medium at 0%: 12 layers x 4 * N^2 * d for QK^T and AV, N = 1569 tokens
    flops = forward_gflops("mbs", 0.0)["video"]
    linear = 2 * 1569 * 12 * (12 * 1024**2) / 1e9 + 2 * 1568 * (3 * 4 * 16 * 16) * 1024 / 1e9
    attention = 12 * 4 * 1569**2 * 1024 / 1e9
    assert flops == pytest.approx(linear + attention, rel=0.01)


def test_report_prints_a_markdown_table(capsys):
    main(["tiny"])
    out = capsys.readouterr().out
    assert out.startswith("| model | params | params (M)")
    assert "| tiny | 2,211,564 | 2.2 | - |" in out and "paper VATT-MBS" in out
