"""From bytes to sections and chunks, with real files made here."""

import itertools

import pytest

from documents.extraction import ExtractionRefused, chunk_sections, detect_kind, extract_sections
from tests.documents import files


def test_a_multi_page_pdf_keeps_its_page_numbers():
    data = files.pdf(["Cover page of the report.", "Revenue grew in the second quarter.", "Refunds take 30 days."])
    assert detect_kind(data) == "pdf"
    sections, pages = extract_sections("pdf", data)
    assert pages == 3
    assert [s.page for s in sections] == [1, 2, 3]
    assert "Refunds take 30 days." in sections[2].text


def test_a_word_document_keeps_its_heading_path():
    data = files.word([("h1", "Policies"), ("p", "General rules apply."), ("h2", "Refunds"),
                       ("p", "Refunds take 30 days."), ("h1", "People"), ("p", "We hire slowly.")])  # fmt: skip
    assert detect_kind(data) == "docx"
    sections, pages = extract_sections("docx", data)
    assert pages is None
    assert [(s.heading, s.text) for s in sections] == [
        ("Policies", "General rules apply."),
        ("Policies > Refunds", "Refunds take 30 days."),
        ("People", "We hire slowly."),
    ]


def test_markdown_headings_but_not_inside_code_fences():
    text = "# Guide\n\nIntro.\n\n## Setup\n\nRun it.\n\n```\n# not a heading\n```\n\n### Details\n\nMore.\n"
    data = text.encode()
    assert detect_kind(data) == "markdown"
    sections, _ = extract_sections("markdown", data)
    assert [s.heading for s in sections] == ["Guide", "Guide > Setup", "Guide > Setup > Details"]
    assert "# not a heading" in sections[1].text


def test_html_and_plain_text():
    html = b"<!doctype html><html><head><title>x</title><script>evil()</script></head><body><h1>FAQ</h1>" \
           b"<p>Answers here.</p><h2>Billing</h2><p>Invoices monthly.</p></body></html>"  # fmt: skip
    assert detect_kind(html) == "html"
    sections, _ = extract_sections("html", html)
    assert [(s.heading, s.text) for s in sections] == [("FAQ", "Answers here."), ("FAQ > Billing", "Invoices monthly.")]
    assert detect_kind(b"Just some notes.\nNothing more.") == "text"


def test_chunks_are_token_sized_overlap_and_never_cross_a_heading(settings):
    settings.DOCUMENTS_CHUNK_TOKENS = (60, 100)
    settings.DOCUMENTS_CHUNK_OVERLAP = 10
    text = f"# One\n\n{files.long_text(3)}\n\n# Two\n\nShort section."
    sections, _ = extract_sections("markdown", text.encode())
    chunks = chunk_sections(sections)
    assert all(c.token_count <= 100 for c in chunks)
    assert [c.heading for c in chunks].count("Two") == 1 and chunks[-1].text == "Short section."
    first_section = [c for c in chunks if c.heading == "One"]
    assert len(first_section) >= 4  # about 300 tokens of prose, cut at 60-100
    assert any(a.text.split()[-1] in b.text for a, b in itertools.pairwise(first_section))


@pytest.mark.parametrize(
    ("data", "status", "code"),
    [
        (b"", 400, "empty_file"),
        (b"   \n", 400, "empty_file"),
        (b"\x7fELF\x02\x01\x01\x00" + b"\x00" * 100, 415, "unsupported_type"),
        ("café".encode("latin-1") * 10, 415, "unsupported_type"),
        (files.plain_zip(), 415, "unsupported_type"),
        (b"PK\x03\x04 not really a zip", 400, "corrupt_file"),
    ],
)
def test_what_is_refused_at_the_door(data, status, code):
    with pytest.raises(ExtractionRefused) as refused:
        detect_kind(data)
    assert (refused.value.status, refused.value.code) == (status, code)


def test_a_zip_bomb_dressed_as_docx_is_never_unpacked():
    bomb = files.zip_bomb_as_docx()
    assert len(bomb) < 1024 * 1024
    with pytest.raises(ExtractionRefused) as refused:
        detect_kind(bomb)
    assert refused.value.status == 413 and "it was not opened" in refused.value.message


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (files.pdf_without_text(), "no_text_layer"),
        (files.pdf(["Secret."], password="hunter2"), "encrypted"),
        (b"%PDF-1.7\n" + b"garbage " * 200, "corrupt_file"),
    ],
)
def test_pdfs_we_cannot_read_say_why(data, code):
    with pytest.raises(ExtractionRefused) as refused:
        extract_sections("pdf", data)
    assert refused.value.code == code and refused.value.message


def test_too_many_pages(settings):
    settings.DOCUMENTS_MAX_PAGES = 2
    with pytest.raises(ExtractionRefused) as refused:
        extract_sections("pdf", files.pdf(["a", "b", "c"]))
    assert refused.value.code == "too_many_pages" and "3 pages" in refused.value.message
