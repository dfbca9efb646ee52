"""The report's parts on their own, without a study: the document's escaping in HTML and
Markdown, the log axis ticks, which study is the latest, the edge warnings, the L0 sentence."""

import re

import optuna
import pytest
from markdown_it import MarkdownIt
from optuna.distributions import FloatDistribution
from optuna.trial import create_trial

from study.report import document, plots, structural, write
from study.report.sections import edge_warnings
from study.storage import open_storage


def test_document_escapes_every_kind_of_block(tmp_path):
    evil = "<script>alert('x')</script> & | `<b>code</b>`"
    (tmp_path / "f.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    blocks = [
        document.Heading(evil),
        document.Paragraph(evil),
        document.Bullets((evil,)),
        document.Warn(evil),
        document.Table((evil, "n"), ((evil, "1.5"),)),
        document.Image("f.png", evil),
        document.Code(evil),
    ]
    page = document.html_page(evil, blocks, tmp_path)
    assert "<script>" not in page and "<b>" not in page
    # title, h1, heading, paragraph, bullet, warning, th, td, alt, caption, code block
    assert page.count("&lt;script&gt;") == 11
    assert page.count("<code>&lt;b&gt;code&lt;/b&gt;</code>") == 8  # inline code, every block
    md = document.markdown(evil, blocks)
    outside_code = re.sub(r"```.*?```|`[^`\n]*`", "", md, flags=re.DOTALL)
    assert "<script>" not in outside_code and "&lt;script&gt;" in outside_code
    table_row = next(line for line in md.splitlines() if line.endswith("| 1.5 |"))
    assert table_row.count(" | ") == 1 and "\\|" in table_row  # the | in text is not a column


# report.md as GitHub renders it: CommonMark with tables and strikethrough, raw HTML allowed
COMMONMARK = MarkdownIt("commonmark", {"html": True}).enable(["table", "strikethrough"])
# everything that is markup in Markdown, as a study name or a parameter value could hold it
MD_EVIL = (
    "[x](javascript:alert(1)) ![i](x.png) [r]: /ref *em* _em_ __strong__ ~~gone~~ a*b*c "
    "sparse_kl <b>raw</b> <javascript:alert(1)> &lt; &#60; \\*kept\\* \\ & # h # "
    "`<i>code</i>`"
)
BLOCK_STARTS = [
    "- x",
    "+ x",
    "* x",
    "1. x",
    "2) x",
    "# x",
    "> x",
    "---",
    "***",
    "___",
    "=== x",
    "    indented",
    "[r]: javascript:alert(1)",
]


def shown(md: str) -> list[tuple[str, set[str]]]:
    """Each piece of inline text of ``md`` as CommonMark shows it, with the kinds of its tokens."""
    inline = [t for t in COMMONMARK.parse(md) if t.type == "inline"]
    return [
        (
            "".join(c.content for c in t.children if c.type in ("text", "code_inline")),
            {c.type for c in t.children},
        )
        for t in inline
    ]


@pytest.mark.parametrize("text", [MD_EVIL, *BLOCK_STARTS])
def test_markdown_shows_every_string_as_text(text, tmp_path):
    plain = text.replace("`", "")  # what a reader sees: the code span's content
    blocks = [
        document.Heading(text),
        document.Paragraph(text),
        document.Bullets((text, text)),
        document.Warn(text),
        document.Table((text, "n"), ((text, "1.5"),)),
        document.Image("f.png", text),
    ]
    pieces = shown(document.markdown(text, blocks))
    leading = plain.strip()
    assert [p for p, _ in pieces] == [leading] * 5 + [
        f"Warning: {leading}",
        leading,
        "n",
        leading,
        "1.5",
        "",
        leading,
    ]
    text_only = {"text", "code_inline", "softbreak"}
    # the document's own markup: the warning's bold label, the figure and its italic caption
    own = (
        [set()] * 5
        + [{"strong_open", "strong_close"}]
        + [set()] * 4
        + [{"image"}, {"em_open", "em_close"}]
    )
    for (piece, kinds), allowed in zip(pieces, own, strict=True):
        assert kinds <= text_only | allowed, (piece, kinds)


def test_markdown_urls_are_links_to_themselves():
    url = "http://127.0.0.1:5000/#/experiments/1/runs?a=b_c&orderByKey=metrics.%60val_mse%60"
    [inline] = [
        t
        for t in COMMONMARK.parse(
            document.markdown("t", [document.Paragraph(f"feasible trials: {url}, best first")])
        )
        if t.type == "inline"
    ][1:]
    assert [c.type for c in inline.children] == ["text", "link_open", "text", "link_close", "text"]
    assert inline.children[1].attrs["href"] == url  # the sentence's comma is not part of it
    assert (inline.children[0].content, inline.children[-1].content) == (
        "feasible trials: ",
        ", best first",
    )


@pytest.mark.parametrize(
    "low, high", [(1e-7, 1e-2), (1.8e-3, 3.2e-3), (0.5, 0.9), (2.1e-3, 2.3e-3), (1e-3, 10.0)]
)
def test_log_axis_ticks_are_few_round_and_inside(low, high):
    ticks = plots.log_ticks(low, high)
    assert 2 <= len(ticks) <= 5 and all(low <= t <= high for t in ticks)
    assert len({f"{t:g}" for t in ticks}) == len(ticks)  # distinct labels


def test_latest_study_is_the_one_whose_trial_started_last(tmp_path):
    storage = open_storage(f"journal:{tmp_path / 'j.log'}")
    for name in ("first", "second", "empty"):
        optuna.create_study(study_name=name, storage=storage)
    for name in ("second", "first"):  # "first" ran a trial most recently
        study = optuna.load_study(study_name=name, storage=storage)
        study.tell(study.ask(), 1.0)
    assert write.latest_study(storage) == "first"


def test_edge_warnings_name_each_parameter_at_a_range_end():
    config = {
        "model.family": "ncae",
        "model.beta": 9.9,
        "model.p": 0.05,
        "model.alpha": 1.01e-5,
        "train.learning_rate": 1e-3,
    }
    trial = create_trial(
        params={"model.beta": 9.9},
        value=0.04,
        user_attrs={"config": config},
        distributions={"model.beta": FloatDistribution(1e-3, 10, log=True)},
    )
    lines = edge_warnings({"ncae": trial})
    assert len(lines) == 2
    assert "`model.beta` = 9.9" in lines[0] and "high end of its range 0.001 … 10" in lines[0]
    assert "`model.alpha` = 1.01e-05" in lines[1] and "low end" in lines[1]


def _trials(*specs):
    """Completed trials numbered 0, 1, ... from (family, val MSE, val L0, k)."""
    out = []
    for number, (family, val_mse, l0, k) in enumerate(specs):
        config = {"model.family": family, **({"model.k": k} if k else {})}
        t = create_trial(
            value=val_mse, user_attrs={"config": config, "val_mse": val_mse, "val_l0": l0}
        )
        t.number = number
        out.append(t)
    return out


def test_the_l0_sentence_measures_each_penalty_family_against_topk_at_the_same_l0():
    trials = _trials(
        ("topk", 0.040, 2.0, 2),
        ("topk", 0.030, 4.0, 4),
        ("topk", 0.050, 1.0, 1),
        ("sparse_kl", 0.060, 1.9, None),
        ("sparse_kl", 0.0375, 3.5, None),
        ("sparse_kl", 0.020, 20.0, None),
        ("ncae", 0.036, 7.0, None),
    )
    families = ["sparse_kl", "ncae", "topk"]
    text = structural.l0_sentence(trials, families, latent=32)
    # by hand: at L0 ≤ 2 topk's best is trial 0 (0.040), sparse_kl's trial 3 (0.060 = 1.50×);
    # at ≤ 4 and ≤ 8 topk's is trial 1 (0.030), sparse_kl's trial 4 (0.0375 = 1.25×); ncae's
    # only trial (0.036 = 1.20×) counts from ≤ 8; sparse_kl's 0.020 at L0 20 at none
    assert text.endswith(
        "at L0 ≤ 2, topk 0.0400 (trial 0, k=2); sparse_kl 1.50×, ncae none that sparse; "
        "at L0 ≤ 4, topk 0.0300 (trial 1, k=4); sparse_kl 1.25×, ncae none that sparse; "
        "at L0 ≤ 8, topk 0.0300 (trial 1, k=4); sparse_kl 1.25×, ncae 1.20×."
    )
    assert structural.l0_sentence(trials[3:], families, latent=32) is None  # no topk trial
    assert "at L0 ≤ 8" not in structural.l0_sentence(trials, families, latent=4)
